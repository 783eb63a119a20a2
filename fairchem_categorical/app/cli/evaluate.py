"""``evaluate``: metrics and plots from prediction files or from a checkpoint and data."""

from __future__ import annotations

import argparse
from pathlib import Path

from fairchem_categorical.app.cli.common import device_kw, say

NAME = "evaluate"
HELP = "accuracy, ranking, calibration and OOD metrics + plots"
DESCRIPTION = (
    "metrics.json, a printed table and PNG plots from predict's CSV/NPZ (or straight "
    "from a checkpoint and data)."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--predictions", help="CSV written by predict (its .npz beside it)")
    parser.add_argument("--npz", help="the NPZ, if not beside the CSV")
    parser.add_argument("--ood-predictions", help="predictions on out-of-distribution data")
    parser.add_argument("--checkpoint", help="predict first with this checkpoint")
    parser.add_argument("--data", nargs="*", help="with --checkpoint: in-distribution data")
    parser.add_argument("--ood-data", nargs="*", help="with --checkpoint: out-of-distribution data")
    parser.add_argument("--device", **device_kw)
    parser.add_argument("--out", required=True, help="output folder")


def run(args: argparse.Namespace) -> int:
    from fairchem_categorical.app.checks import output_folder
    from fairchem_categorical.app.jobs import evaluate_checkpoint
    from fairchem_categorical.report.evaluate import evaluate_files, format_metrics, notes

    if args.checkpoint and args.predictions:
        raise ValueError("give --predictions (files predict wrote) or --checkpoint with "
                         "--data (predict now), not both")
    if args.checkpoint:
        if not args.data:
            raise ValueError("--checkpoint needs --data (and optionally --ood-data)")
        stray = [f for f, v in (("--npz", args.npz), ("--ood-predictions",
                                                      args.ood_predictions)) if v]
        if stray:
            raise ValueError(f"{' and '.join(stray)} go with --predictions, not --checkpoint "
                             "(with --checkpoint, give --ood-data)")
        metrics = evaluate_checkpoint(args.checkpoint, args.data, args.out, args.ood_data,
                                      progress=say, device=args.device)
    elif args.predictions:
        stray = [f for f, v in (("--data", args.data), ("--ood-data", args.ood_data)) if v]
        if stray:
            raise ValueError(f"{' and '.join(stray)} need{'s' if len(stray) == 1 else ''} "
                             "--checkpoint (to predict them); with --predictions, give "
                             "--ood-predictions CSV")
        output_folder(args.out)
        metrics = evaluate_files(args.predictions, args.out, npz=args.npz,
                                 ood_predictions=args.ood_predictions, say=say)
    else:
        raise ValueError("give --predictions CSV, or --checkpoint with --data")
    say(format_metrics(metrics))
    for note in notes(metrics):
        say(f"note: {note}")
    say(f"wrote {Path(args.out) / 'metrics.json'} and plots in {args.out}")
    return 0
