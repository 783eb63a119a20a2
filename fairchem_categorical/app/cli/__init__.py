"""``fairchem-categorical``: the command line, arguments only.

One module per command (as MACE's ``cli/`` has), each with its ``NAME``, ``HELP``,
``DESCRIPTION``, ``add_arguments(parser)`` and ``run(args)``; ``run`` turns parsed
arguments into one call of the library (``data``, ``bins``, ``report``) or of
``app.jobs`` (where a fairchem line is chosen) and prints what a person needs. Errors the
library raises for bad input become one line on stderr and exit 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from types import ModuleType

from fairchem_categorical.app.cli import (
    active_learn,
    calibrate,
    convert,
    demo,
    evaluate,
    fit_bins,
    fit_uncertainty,
    make_dataset,
    predict,
    screen,
    train,
)

#: the commands, in the order ``--help`` lists them
COMMANDS: tuple[ModuleType, ...] = (make_dataset, convert, fit_bins, train, predict, evaluate,
                                    calibrate, fit_uncertainty, screen, active_learn, demo)
#: commands whose unknown arguments are fairchem overrides, passed through
TAKE_OVERRIDES = (train.NAME, active_learn.NAME)

#: what ``fairchem-categorical --help`` says above the commands
DESCRIPTION = ("Categorical (histogram) energy and force heads for fairchem: make or convert "
               "data, fit the bins, train through fairchem, predict with uncertainties, "
               "evaluate, calibrate, screen. Errors in the input are one line on stderr "
               "(exit 2).")

#: set to 1 to see the traceback behind an error message
DEBUG_ENV = "FAIRCHEM_CATEGORICAL_DEBUG"


def build_parser() -> argparse.ArgumentParser:
    """The parser: one sub-parser per module of ``COMMANDS``."""
    p = argparse.ArgumentParser(prog="fairchem-categorical", description=DESCRIPTION)
    sub = p.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        s = sub.add_parser(command.NAME, help=command.HELP, description=command.DESCRIPTION)
        command.add_arguments(s)
        s.set_defaults(func=command.run)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run one command; 2 with one line on stderr for bad input."""
    args, unknown = build_parser().parse_known_args(argv)
    if unknown:
        if args.command not in TAKE_OVERRIDES:
            build_parser().error(f"unrecognized arguments: {' '.join(unknown)}")
        args.overrides = [*args.overrides, *unknown]
    try:
        return args.func(args)
    # bad input, files that cannot be read or written, a missing optional package: one
    # line that names the problem (FileNotFoundError, PermissionError, ... are OSErrors)
    except (ValueError, OSError, RuntimeError, ImportError) as err:
        if os.environ.get(DEBUG_ENV):
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2
