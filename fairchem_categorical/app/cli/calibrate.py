"""``calibrate``: the temperature and the epistemic scale, fitted on validation data."""

from __future__ import annotations

import argparse
from pathlib import Path

from fairchem_categorical.app.cli.common import (
    device_kw,
    report_calibration,
    say,
    temperature_flag,
    temperature_kw,
)

NAME = "calibrate"
HELP = "fit the predictive distribution's scales (or the temperature) on validation data"
DESCRIPTION = (
    "With a fitted epistemic state (fit-uncertainty): fit the predictive distribution's "
    "temperature, disagreement weight and epistemic scale that minimise the NLL of "
    "validation targets under energy_uncertainty's distribution, for every method. "
    "Without one: the histogram's temperature. Stored in a copy of the checkpoint; "
    "predict applies it."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--val", nargs="+", required=True, help="validation data")
    parser.add_argument("--out", required=True, help="the calibrated checkpoint to write")
    parser.add_argument("--device", **device_kw)
    parser.add_argument(*temperature_flag, **temperature_kw)


def run(args: argparse.Namespace) -> int:
    from fairchem_categorical.app.jobs import calibrate

    report_calibration(calibrate(args.checkpoint, args.val, args.out,
                                  fit_temperature=args.fit_temperature, device=args.device))
    say(str(Path(args.out)))
    return 0
