"""``make-dataset``: generate labelled adsorbate+slab datasets (EMT or a realistic labeller)."""

from __future__ import annotations

import argparse
from pathlib import Path

from fairchem_categorical.app.cli.common import fmt_kw, say

NAME = "make-dataset"
HELP = "generate labelled adsorbate+slab data"
DESCRIPTION = (
    "Generate adsorbate+slab frames and write train/val/test dataset folders (with "
    "metadata.npz), split by system. With --labeller emt (the default): the embedded "
    "set, fcc metal slabs labelled by ASE's EMT in seconds. With --labeller "
    "sevennet:7net-0: OC20-like systems built with fairchem-data-oc's slab, "
    "adsorbate and placement tools, labelled by SevenNet-0 (a universal potential "
    "trained on MPtrj PBE bulk data: a stand-in for DFT, not DFT; needs pip install "
    "'fairchem-categorical[realistic]'); minutes to an hour, cached per system in "
    "OUT/.cache (a re-run resumes)."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--n-systems", "--systems", dest="n_systems", type=int, default=24,
                        help="systems (slab + adsorbate placements) to generate (default 24)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--labeller", default="emt",
                        help="emt (default) or sevennet:7net-0 (OC20-like realistic systems)")
    parser.add_argument("--ood-systems", type=int, default=0,
                        help="also write the out-of-distribution splits to OUT/ood/<split>, each "
                             "with this many systems (default 0: none)")
    parser.add_argument("--frames-per-system", type=int, default=None,
                        help="frames per system: about half along the relaxation, the rest "
                             "rattles (default 6)")
    parser.add_argument("--workers", type=int, default=None,
                        help="labelling processes (realistic set; default one per core)")
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument("--format", **fmt_kw)


def run(args: argparse.Namespace) -> int:
    common = dict(progress=say, overwrite=args.overwrite, fmt=args.format)
    if args.labeller == "emt":
        from fairchem_categorical.data import make_dataset, make_ood_datasets

        extra = {} if args.frames_per_system is None else {
            "frames_per_system": args.frames_per_system}
        paths = make_dataset(args.out, n_systems=args.n_systems, seed=args.seed, **common,
                             **extra)
        if args.ood_systems:
            paths.update(make_ood_datasets(Path(args.out) / "ood", n_systems=args.ood_systems,
                                           seed=args.seed + 1000, **common))
    else:
        from fairchem_categorical.realistic import (
            make_realistic_dataset,
            make_realistic_ood_datasets,
        )

        realistic = dict(labeller=args.labeller, workers=args.workers, **common)
        if args.frames_per_system is not None:
            realistic["frames_per_system"] = args.frames_per_system
        paths = make_realistic_dataset(args.out, args.n_systems, args.seed, **realistic)
        if args.ood_systems:
            paths.update(make_realistic_ood_datasets(Path(args.out) / "ood", args.ood_systems,
                                                     args.seed + 1000, **realistic))
    for split, path in paths.items():
        say(f"{split}: {path}")
    return 0
