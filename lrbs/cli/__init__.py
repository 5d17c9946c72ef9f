"""`python -m lrbs COMMAND`: every experiment of the app, on the command line.

Each experiment's command is generated from its Config (lrbs/cli/flags.py) and run by one
runner (lrbs/cli/runner.py): `--out FILE.csv` writes the CSV the page offers, `--json` prints
one JSON object of headline figures as the last line of stdout, and the run is recorded in
the history as it goes. Bad input exits with status 2 and one line on stderr.
"""

from lrbs.cli.main import main

__all__ = ["main"]
