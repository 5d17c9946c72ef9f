"""One stored run of every experiment (each its quickest settings, through the CLI as a user
runs it), exported through the store and through `history export`, and opened on the Run
history page. A point's own columns (a sweep's `run` and `run_id`) survive the export next
to the history's `history_id`, `history_kind` and `history_name`."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest
from support import ROOT

from lrbs.cli import main
from lrbs.experiments import registry
from lrbs.runs.store import EXPORT_COLUMNS, RunStore

D = ["--dataset", "digits"]
QUICK: dict[str, list[str]] = {
    "train": [*D, "--steps", "5"],
    "lr-find": [*D, "--iterations", "20"],
    "lr-sweep": [*D, "--lrs", "0.01", "0.1", "--steps", "5"],
    "bs-sweep": [*D, "--batch-sizes", "16", "32", "--steps", "5"],
    "bs-scaling-check": [*D, "--k-max", "2", "--epochs", "0.2"],
    "bs-probe": [*D, "--cap-mib", "1"],
    "bs-schedule": [*D, "--epochs", "2", "--milestones", "1", "--regimes", "decay", "grow"],
    "schedules": [*D, "--epochs", "1", "--schedules", "constant", "cosine", "--no-preview"],
    "noise-scale": [*D, "--steps", "30"],
    "sharpness": [*D, "--lrs", "0.1", "--steps", "10", "--subset", "100"],
    "lr-batch-map": [*D, "--batch-sizes", "16", "32", "--rates", "3", "--steps", "5"]
    + ["--noise-steps", "20"],
    "recommend": [*D, "--budget", "quick", "--sweep-steps", "10"],
    "autotune": ["run", *D, "--trials", "1", "--seconds-per-trial", "1", "--workers", "1"],
    "gd1d": [],
}


def test_the_table_covers_every_experiment():
    assert set(QUICK) == set(registry())


@pytest.fixture(scope="module")
def stored(tmp_path_factory) -> tuple[str, dict[str, int]]:
    """A history with one finished run of each kind: (its path, run id by kind)."""
    folder = tmp_path_factory.mktemp("export")
    db = str(folder / "h.db")
    for kind, args in QUICK.items():
        extra = ["--storage", str(folder / "study.log")] if kind == "autotune" else []
        assert main([kind, *args, *extra, "--db", db, "--threads", "1"]) == 0, kind
    with RunStore(db) as store:
        runs = store.runs()
    assert sorted(runs.kind) == sorted(QUICK)
    return db, dict(zip(runs.kind, (int(i) for i in runs.id), strict=True))


@pytest.mark.parametrize("kind", sorted(QUICK))
def test_every_kind_exports_with_its_own_columns_kept(stored, kind):
    db, ids = stored
    with RunStore(db) as store:
        points = store.points(ids[kind])
        out = store.export([ids[kind]])
    assert len(points) > 0 and len(out) == len(points)
    assert list(out.columns[:4]) == list(EXPORT_COLUMNS)
    assert set(out.history_id) == {ids[kind]} and set(out.history_kind) == {kind}
    for column in points.columns:  # the point's own values, untouched (a sweep's "run")
        assert out[column].equals(points[column]), column


def test_history_export_writes_every_kind_in_one_csv(stored, tmp_path, capsys):
    db, ids = stored
    csv = tmp_path / "all.csv"
    assert main(["history", "export", *map(str, ids.values()), "--out", str(csv), "--db", db]) == 0
    assert "Traceback" not in capsys.readouterr().err
    df = pd.read_csv(csv, low_memory=False)
    with RunStore(db) as store:
        counts = {i: len(store.points(i)) for i in ids.values()}
    assert len(df) == sum(counts.values())
    assert df.groupby("history_id").size().to_dict() == counts
    assert df.groupby("history_id").history_kind.first().to_dict() == {i: k for k, i in ids.items()}
    sweep = df[(df.history_kind == "lr-sweep") & (df.channel == "runs")]
    assert sweep.run.nunique() == 2  # the sweep's two rates, by their own names


@pytest.mark.parametrize("kind", sorted(QUICK))
def test_the_history_page_opens_every_kind(stored, kind):
    db, ids = stored
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=90)
    at.query_params["s_db_path"] = json.dumps(db)
    at.switch_page("pages/history.py")
    at.run()
    at.session_state["h_selected"] = [ids[kind]]
    at.run()
    assert not at.exception, at.exception
    assert at.get("download_button")
    assert any(f"**{kind}**" in m.value for m in at.markdown)
