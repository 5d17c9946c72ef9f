"""The parser (one sub-command per experiment, plus history and datasets) and `main`."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Sequence

from lrbs.cli import flags, runner
from lrbs.cli.autotune import ACTIONS
from lrbs.cli.parser import Parser
from lrbs.cli.tools import add_tool_commands
from lrbs.core.errors import LrbsError
from lrbs.core.setup import Setup
from lrbs.experiments import registry
from lrbs.runs.store import jsonable


def build_parser() -> Parser:
    parser = Parser(prog="python -m lrbs", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    experiments = registry()
    for kind, exp in experiments.items():
        p = sub.add_parser(kind, help=(exp.__doc__ or kind).splitlines()[0])
        if kind in ACTIONS:  # an experiment with sub-actions of its own
            ACTIONS[kind](p, Parser)
            continue
        if getattr(exp, "USES_SETUP", True):
            flags.add(p, Setup, ("setup",), title="data and model")
        flags.add(p, exp.Config, ("config",))
        runner.add_output_flags(p)
        p.set_defaults(experiment=exp)
    add_tool_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    code = 0
    try:
        a = build_parser().parse_args(argv)
        logging.basicConfig(
            level=logging.INFO if a.verbose else logging.WARNING,
            format="%(levelname)s %(name)s: %(message)s",
            stream=sys.stderr,
        )
        if getattr(a, "experiment", None) is not None:
            out, code = runner.run_command(a.experiment, a)
        else:
            out = a.handler(a)
    except LrbsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        user_lines = getattr(exc, "user_traceback", "")
        if user_lines:  # the user's own file's lines, never lrbs's
            print(user_lines.rstrip("\n"), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    if getattr(a, "json", False):
        print(json.dumps(jsonable(out)))
    return code
