"""Every command line the README shows still parses into the experiment's settings (the
flags are generated from the configs, so a renamed field would silently drop a documented
flag)."""

import re
import shlex

import pytest
from support import ROOT

from lrbs.cli import flags
from lrbs.cli.main import build_parser
from lrbs.core.setup import Setup


def readme_commands() -> list[list[str]]:
    text = (ROOT / "README.md").read_text().replace("\\\n", " ")
    found = []
    for line in text.splitlines():
        m = re.search(r"(?:\$py|python) -m lrbs (.+?)(?:\s+#.*)?$", line)
        if m and not m.group(1).startswith(("...", "COMMAND")) and "`" not in m.group(1):
            found.append(shlex.split(m.group(1)))
    return found


COMMANDS = readme_commands()


def test_the_readme_shows_every_experiment():
    shown = {c[0] for c in COMMANDS}
    from lrbs.experiments import registry

    assert set(registry()) <= shown, set(registry()) - shown


@pytest.mark.parametrize("argv", COMMANDS, ids=lambda a: " ".join(a)[:60])
def test_a_readme_command_parses_into_its_config(argv):
    a = build_parser().parse_args(argv)
    exp = getattr(a, "experiment", None)
    if exp is None:
        assert a.handler is not None  # history, datasets, autotune worker
        return
    if getattr(exp, "USES_SETUP", True):
        flags.build(a, Setup, ("setup",))
    flags.build(a, exp.Config, ("config",))
