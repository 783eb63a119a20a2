"""``convert``: ASE-readable files with energies and forces to a dataset of either line."""

from __future__ import annotations

import argparse

from fairchem_categorical.app.cli.common import fmt_kw, say

NAME = "convert"
HELP = "ASE-readable files with energies+forces -> LMDB dataset"
DESCRIPTION = (
    "Convert extxyz / traj / ASE db / LMDB files to an ASE-LMDB (fairchem 2.x) or "
    "pyg-lmdb (fairchem 1.10) dataset."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+")
    parser.add_argument("--out", required=True,
                        help="output file (.aselmdb, or .lmdb with --format pyg-lmdb) or folder "
                             "(written as FOLDER/data.aselmdb or FOLDER/data.lmdb); metadata.npz "
                             "lands beside it")
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument("--format", **fmt_kw)


def run(args: argparse.Namespace) -> int:
    from fairchem_categorical.data import convert

    n = convert(args.inputs, args.out, overwrite=args.overwrite, fmt=args.format)
    say(f"wrote {n} structures to {args.out}")
    return 0
