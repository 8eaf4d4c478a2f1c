"""The ``emlens`` command: directions, compare, generate, serve, evaluate, judge, train, export,
demo.

One private module per command group (``_directions``, ``_generate``, ``_serve``,
``_evaluate``, ``_judge``, ``_train``, ``_export``); what they share lives in ``_checks``
(validation before the expensive part, one-line errors) and ``_models`` (model options).
Every user error is one line naming the input and what was expected, exit status 2.
"""

from __future__ import annotations

import argparse

from emlens.cli import (
    _directions,
    _evaluate,
    _export,
    _generate,
    _judge,
    _screen,
    _serve,
    _train,
)
from emlens.cli._checks import USER_ERRORS, Parser, report

__all__ = ["main", "parser"]


def parser() -> argparse.ArgumentParser:
    """The ``emlens`` argument parser, one sub-command per command."""
    p = Parser(prog="emlens", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    for group in (_directions, _generate, _serve, _evaluate, _judge, _train, _export, _screen):
        group.add_parsers(sub)
    return p


def main(argv: list[str] | None = None) -> None:
    """Run the command ``argv`` (default: the process's arguments).

    Raises:
        SystemExit: status 2 after printing a user error as one line.
    """
    from emlens.core.models import ModelLoadError
    from emlens.eval.judges.reply import JudgeRequestError

    a = parser().parse_args(argv)
    try:
        a.fn(a)
    except (*USER_ERRORS, ModelLoadError, JudgeRequestError) as e:
        report(a.cmd, e)
