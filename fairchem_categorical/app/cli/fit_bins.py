"""``fit-bins``: the histogram support, element references and normalisation from training data."""

from __future__ import annotations

import argparse

from fairchem_categorical.app.cli.common import say

NAME = "fit-bins"
HELP = "propose the histogram support from training data"
DESCRIPTION = (
    "Stream the data, fit element references and normalisation as the configs apply "
    "them, and write the bins YAML."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data", nargs="+", help="training data (ASE-LMDB or any ASE-readable file)")
    parser.add_argument("--num-bins", type=int, default=128)
    parser.add_argument("--level", choices=("per_atom", "total"), default="per_atom")
    parser.add_argument("--margin", type=float, default=0.25,
                        help="widen the support by this fraction of the observed range per side")
    parser.add_argument("--sigma-ratio", type=float, default=0.75)
    parser.add_argument("--check", nargs="*", help="report how many targets of these files clip")
    parser.add_argument("--from-fairchem", metavar="FILE",
                        help="reuse fairchem's fitted element references instead of fitting "
                             "them: its element references file (.pt or .npz, as a config's "
                             "element_refs names) or a fairchem 1.10 checkpoint trained with "
                             "them; the per-atom mean, std and supports are fitted on DATA")
    parser.add_argument("--out", required=True)


def run(args: argparse.Namespace) -> int:
    from fairchem_categorical.app.checks import output_file
    from fairchem_categorical.bins import count_clipped, describe, fit_bins_files, write_bins
    from fairchem_categorical.histogram import HistogramSupport

    output_file(args.out)

    refs = None
    if args.from_fairchem:
        from fairchem_categorical.bins import read_fairchem_references

        refs = read_fairchem_references(args.from_fairchem)
        say(f"element references from {args.from_fairchem} (not refitted)")
    fit = fit_bins_files(args.data, num_bins=args.num_bins, level=args.level,
                         margin=args.margin, sigma_ratio=args.sigma_ratio, progress=say,
                         references=refs)
    say(describe(fit))
    for path in args.check or []:
        clipped, n = count_clipped([path], fit.energy, HistogramSupport.from_spec(fit.support))
        say(f"{path}: {clipped} of {n} targets fall outside the support and would be clipped")
    say(f"wrote {write_bins(fit, args.out, args.data)}")
    return 0
