"""The commands that are not experiments: the run history and the datasets."""

from __future__ import annotations

import argparse
import json
import sqlite3

from lrbs.core.errors import require


def add_tool_commands(sub) -> None:
    p = sub.add_parser("history", help="the run history: list, show, export, delete")
    p.add_argument("action", choices=["list", "show", "export", "delete"])
    p.add_argument("ids", type=int, nargs="*")
    p.add_argument("--kind", default=None, help="only runs of this experiment")
    p.add_argument("--db", default=None, help="run-history file (default: LRBS_DB or ~/.local)")
    p.add_argument("--out", default=None, help="CSV file for export")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=history)
    p = sub.add_parser("datasets", help="list datasets and whether they are here")
    p.set_defaults(handler=datasets)


def history(a: argparse.Namespace) -> dict:
    from lrbs.runs.store import RunStore, StoreError, default_path

    path = a.db or default_path()
    try:
        with RunStore(path) as store:
            return _history(a, store)
    except sqlite3.Error as exc:  # a file that opened but breaks on reading (damaged)
        raise StoreError(f"{path} cannot be read as a run history ({exc})") from None


def _history(a: argparse.Namespace, store) -> dict:
    """`history`'s actions on an open store."""
    from lrbs.cli.runner import check_out

    if a.action == "list":
        runs = store.runs(kind=a.kind)
        if not a.json:
            print(runs.to_string(index=False) if not runs.empty else "no runs yet")
        return {"runs": runs.astype({"started": str, "ended": str}).to_dict("records")}
    require(bool(a.ids), f"history {a.action} needs at least one run id")
    for i in a.ids:
        store.run(i)  # a clear error for an unknown id
    if a.action == "show":
        info = store.run(a.ids[0])
        if not a.json:
            print(json.dumps(info, indent=2, default=str))
        return info
    if a.action == "export":
        require(bool(a.out), "history export needs --out FILE.csv")
        check_out(a.out)
        df = store.export(a.ids)
        df.to_csv(a.out, index=False)
        if not a.json:
            print(f"wrote {len(df)} points of {len(a.ids)} run(s) to {a.out}")
        return {"rows": len(df), "runs": a.ids}
    n = store.delete(a.ids)
    if not a.json:
        print(f"deleted {len(a.ids)} run(s)")
    return {"deleted": a.ids, "count": n}


def datasets(a: argparse.Namespace) -> dict:
    from lrbs.core.data import DATASETS, availability

    here = availability()
    for name, ok in here.items():
        e = DATASETS[name]
        print(f"{name:<22} {'here' if ok else 'absent':<7} {e.about if ok else e.how_to_get}")
    return {"available": here}
