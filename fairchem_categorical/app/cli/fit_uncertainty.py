"""``fit-uncertainty``: the epistemic state, fitted after training (then calibrated)."""

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
from fairchem_categorical.epistemic import DEFAULT_METHOD, METHODS

NAME = "fit-uncertainty"
HELP = "fit the epistemic uncertainty after training"
DESCRIPTION = (
    "One pass of the trained model over its training data fits the density of the "
    "energy head's features (what the model has seen); the state goes into a copy of "
    "the checkpoint, so predict writes energy_uncertainty, ood_score and "
    "atom_ood_score. With --val, the temperature and the epistemic scale are then "
    "fitted on it (calibrate)."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--train", nargs="+", required=True, help="the training data")
    parser.add_argument("--val", nargs="*", help="validation data to calibrate on")
    parser.add_argument("--out", required=True, help="the checkpoint to write")
    parser.add_argument("--method", choices=METHODS, default=None,
                        help="what ood_score and energy_uncertainty use (default "
                             f"{DEFAULT_METHOD}; "
                             "every method's score is computed)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", **device_kw)
    parser.add_argument(*temperature_flag, **temperature_kw)


def run(args: argparse.Namespace) -> int:
    from fairchem_categorical.app.jobs import fit_uncertainty

    result = fit_uncertainty(args.checkpoint, args.train, args.val, args.out,
                             method=args.method, batch_size=args.batch_size,
                             device=args.device, fit_temperature=bool(args.fit_temperature),
                             progress=say)
    if args.val:
        report_calibration(result)
    else:
        say("not calibrated (no --val): run calibrate before trusting energy_uncertainty")
    say(str(Path(args.out)))
    return 0
