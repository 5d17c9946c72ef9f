import os
import sys
import tempfile
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("LRBS_DATA_ROOT", str(ROOT / "tests" / ".no-data-here"))
# the run history of a test session goes to a file of its own, never the user's
os.environ["LRBS_DB"] = str(Path(tempfile.mkdtemp(prefix="lrbs-test-")) / "runs.db")
# `make test` runs two pytest-xdist workers on a 2-core machine: one torch thread each
workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
torch.set_num_threads(max(1, min(2, torch.get_num_threads()) // workers))

from support import blobs  # noqa: E402


@pytest.fixture
def data():
    return blobs()


# the PostgreSQL server of tests/test_postgres.py, and its loud skip where there is none
from pg_support import pg, pytest_terminal_summary  # noqa: E402, F401

# The slowest files first, so that `make test`'s two xdist workers (--dist loadfile: a file's
# tests stay together, in order, on one worker) start them early and do not end on a browser
# test running alone.
SLOW_FIRST = (
    "tests/e2e/test_browser.py",
    "tests/test_postgres.py",
    "tests/e2e/test_jobs_browser.py",
    "tests/test_cli_runs.py",
    "tests/e2e/test_chosen_browser.py",
    "tests/test_autotune.py",
    "tests/test_jobs.py",
    "tests/test_faults.py",
)


def pytest_collection_modifyitems(items):
    def rank(item) -> int:
        path = item.nodeid.split("::")[0]
        return SLOW_FIRST.index(path) if path in SLOW_FIRST else len(SLOW_FIRST)

    items.sort(key=rank)  # stable: each file keeps its own order
