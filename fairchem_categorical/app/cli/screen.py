"""``screen``: adsorption-energy screening with uncertainty."""

from __future__ import annotations

import argparse

from fairchem_categorical.app.cli.common import device_kw, say

NAME = "screen"
HELP = "adsorption-energy screening with uncertainty"
DESCRIPTION = (
    "Place an adsorbate on slabs (fairchem-data-oc), relax with the checkpoint's "
    "calculator, flag anomalies, rank adsorption energies with intervals and "
    "P(lowest), and recommend which configurations to send to DFT."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--slab", nargs="+", required=True,
                        help="ASE-readable slab files, or METAL/FACET (e.g. Cu/fcc111)")
    parser.add_argument("--adsorbate", nargs="+", required=True,
                        help="fairchem-data-oc SMILES (*O, *OH, *CO, ...) or ASE molecule names")
    parser.add_argument("--num-placements", type=int, default=10)
    parser.add_argument("--mode", default="heuristic",
                        choices=("heuristic", "random", "random_site_heuristic_placement"),
                        help="fairchem-data-oc's placement mode")
    parser.add_argument("--fmax", type=float, default=0.05)
    parser.add_argument("--steps", type=int, default=200)
    pick = parser.add_mutually_exclusive_group()
    pick.add_argument("--coverage", type=float, default=0.9,
                      help="send the fewest configurations whose P(lowest) sums to this")
    pick.add_argument("--budget", type=int, help="send the k most likely lowest instead")
    parser.add_argument("--top-k", type=int, default=5, help="AdsorbML's fixed top-k, reported")
    parser.add_argument("--gas-references", help="JSON {element: eV}; default OC20's H, C, N, O")
    parser.add_argument("--vasp", action="store_true",
                        help="write VASP inputs (fairchem-data-oc) for the recommended ones")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", **device_kw)
    parser.add_argument("--out", required=True, help="output folder")


def run(args: argparse.Namespace) -> int:
    from fairchem_categorical.app.screen import run_screen

    run_screen(args.checkpoint, args.slab, args.adsorbate, args.out,
               num_placements=args.num_placements, fmax=args.fmax, steps=args.steps,
               mode=args.mode, coverage=args.coverage, budget=args.budget, top_k=args.top_k,
               gas_references=args.gas_references, seed=args.seed, device=args.device,
               vasp=args.vasp, say=say)
    return 0
