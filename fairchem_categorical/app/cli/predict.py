"""``predict``: energies, forces and uncertainties to CSV + NPZ."""

from __future__ import annotations

import argparse

from fairchem_categorical.app.cli.common import device_kw, say

NAME = "predict"
HELP = "energies, forces and uncertainties to CSV + NPZ"
DESCRIPTION = "One CSV row per structure; per-atom arrays in an NPZ."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("data", nargs="+")
    parser.add_argument("--out", required=True, help="CSV path; the NPZ goes beside it")
    parser.add_argument("--batch-size", type=int, default=8,
                        help="structures per forward pass (one graph per batch)")
    parser.add_argument("--device", **device_kw)
    parser.add_argument("--inference-settings", metavar="PRESET",
                        help="fairchem 2.x inference settings: batch (default: unmerged, "
                             "uncompiled, any mix of structures), traineval, high-precision or "
                             "multigpu (merge_mole + torch.compile: one composition per run), "
                             "default (UMA Nitro, which runs only fairchem's released UMA "
                             "weights: fairchem falls back to multigpu)")
    parser.add_argument("--task", metavar="NAME",
                        help="fairchem 2.x: which of the checkpoint's tasks (datasets) to predict, "
                             "e.g. oc20 or omat for a UMA model (default: its first)")
    parser.add_argument("--forces-uncertainty", action="store_true",
                        help="a conservative shallow ensemble (num_members > 1): each atom's "
                             "force uncertainty, the spread of its members' forces (NPZ "
                             "forces_std; one more backward pass per member)")


def run(args: argparse.Namespace) -> int:
    import math

    from fairchem_categorical.app.checks import output_file
    from fairchem_categorical.app.jobs import predict_to_files

    output_file(args.out)  # before the prediction, not after
    written = predict_to_files(args.checkpoint, args.data, args.out,
                               batch_size=args.batch_size, device=args.device, progress=say,
                               inference_settings=args.inference_settings, task=args.task,
                               member_forces=args.forces_uncertainty)
    csv_path, npz_path = written.paths
    say(f"wrote {csv_path} ({written.count} structures) and {npz_path}")
    first = written.first
    if first is not None and first.energy_probs is not None and math.isnan(first.ood_score):
        say("note: energy_uncertainty and ood_score are empty: this checkpoint has no fitted "
             "epistemic state (run fit-uncertainty on it)")
    return 0
