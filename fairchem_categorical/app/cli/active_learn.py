"""``active-learn``: active learning: label the most uncertain structures, fine-tune, repeat."""

from __future__ import annotations

import argparse
from pathlib import Path

from fairchem_categorical.active import STRATEGIES
from fairchem_categorical.app.cli.common import say

NAME = "active-learn"
HELP = "label the most uncertain structures, fine-tune, repeat (EMT as the reference)"
DESCRIPTION = (
    "Active learning with fairchem 2.x configs: train (or start from --checkpoint), "
    "score a pool, label the most uncertain structures with EMT, fine-tune through "
    "fairchem, repeat; logs held-out error and Spearman(uncertainty, error) per "
    "round to OUT/active_learning.csv. Extra arguments are Hydra overrides for the "
    "first training."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--train", required=True, help="starting labelled set (data folder/file)")
    parser.add_argument("--pool", required=True, help="unlabelled candidates (labels are ignored)")
    parser.add_argument("--heldout", required=True, help="labelled held-out set")
    parser.add_argument("--bins", required=True, help="bins YAML (fit-bins on --train)")
    parser.add_argument("--checkpoint", help="start from this categorical checkpoint (no round-0 "
                                             "training)")
    parser.add_argument("--config", help="first-training config (default: the conserving eSEN)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--per-round", type=int, default=4)
    parser.add_argument("--strategy", choices=STRATEGIES, default="uncertainty",
                        help="uncertainty: the most uncertain; per_system: the most uncertain "
                             "of each system in turn; diverse: uncertainty x distance to what "
                             "is labelled or picked; random")
    parser.add_argument("--calibration-data",
                        help="labelled data that validates training and calibrates the "
                             "uncertainty (default: --heldout, which is then scored on the "
                             "data its scale was fitted to)")
    parser.add_argument("--ensemble", type=int, default=0,
                        help="use an ensemble of N scalar models and their disagreement instead")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--finetune-epochs", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True)
    parser.add_argument("--device", default=None,
                        help="cpu, cuda or cuda:N: where the models train and score (default: the "
                             "config's device for training, CUDA when present for scoring)")
    parser.add_argument("overrides", nargs="*")


def run(args: argparse.Namespace) -> int:
    from fairchem_categorical.app.active import run_active

    log = run_active(args.train, args.pool, args.heldout, args.bins, args.out,
                     rounds=args.rounds, per_round=args.per_round, strategy=args.strategy,
                     ensemble=args.ensemble, config=args.config, epochs=args.epochs,
                     finetune_epochs=args.finetune_epochs, overrides=args.overrides,
                     seed=args.seed, checkpoint=args.checkpoint, say=say,
                     device=args.device, calibration=args.calibration_data)
    say(f"wrote {Path(args.out) / 'active_learning.csv'} ({len(log)} rounds)")
    return 0
