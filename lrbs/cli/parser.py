"""An argparse parser whose errors are one line (an LrbsError), never a usage dump."""

from __future__ import annotations

import argparse

from lrbs.core.errors import LrbsError


class ArgumentError(LrbsError):
    pass


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:
        raise ArgumentError(f"{self.prog}: {message}")
