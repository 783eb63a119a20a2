"""``train``: training through fairchem's own entry point."""

from __future__ import annotations

import argparse

from fairchem_categorical.app.cli.common import say

NAME = "train"
HELP = "train with fairchem's own entry point"
DESCRIPTION = (
    "Runs `fairchem -c CONFIG` (fairchem 2.x configs) or `fairchem --mode train "
    "--config-yml CONFIG` (1.10 configs) with the plugin's heads; extra arguments "
    "are passed to fairchem as overrides. Last line: final checkpoint (fitted, with "
    "--fit-uncertainty)."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config")
    parser.add_argument("--train-data")
    parser.add_argument("--val-data")
    parser.add_argument("--bins", help="bins YAML written by fit-bins")
    parser.add_argument("--max-epochs", type=int)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--run-dir", help="default: runs/fairchem1 or runs/fairchem2")
    parser.add_argument("--device", default=None,
                        help="cpu, cuda or cuda:N (sets fairchem's device; default: the config's "
                             "job.device_type on 2.x, CUDA when present on 1.10)")
    parser.add_argument("--fit-uncertainty", action="store_true",
                        help="then fit-uncertainty on --train-data, calibrated on --val-data; the "
                             "last line is the fitted checkpoint (<checkpoint>_fitted.pt)")
    parser.add_argument("overrides", nargs="*",
                        help="fairchem overrides: Hydra's lr=1e-3 (2.x), "
                             "--optim.lr_initial=1e-3 (1.10)")


def run(args: argparse.Namespace) -> int:
    from fairchem_categorical.app.jobs import train

    say(str(train(args.config, args.train_data, args.val_data, args.bins, args.max_epochs,
                   args.seed, args.run_dir, args.overrides, say=say,
                   fit=args.fit_uncertainty, device=args.device)))
    return 0
