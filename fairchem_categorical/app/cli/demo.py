"""``demo``: the main job on the embedded data."""

from __future__ import annotations

import argparse
from pathlib import Path

NAME = "demo"
HELP = "the main job on the embedded data"
DESCRIPTION = (
    "Make data, fit bins, train categorical and scalar eSEN, predict, print the "
    "comparison table, plot distributions."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="demo_out")
    parser.add_argument("--max-epochs", type=int, default=None)
    parser.add_argument("--n-systems", type=int, default=24)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default=None,
                        help="cpu, cuda or cuda:N: where both models train and predict (default: "
                             "the configs' device for training, the CPU for predictions)")


def run(args: argparse.Namespace) -> int:
    from fairchem_categorical.app.demo import run_demo

    run_demo(Path(args.out), max_epochs=args.max_epochs, n_systems=args.n_systems,
             seed=args.seed, device=args.device)
    return 0
