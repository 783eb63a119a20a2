"""The README's screening run: a tiny EMT-trained categorical eSEN screens *O on two slabs.

    .venv/bin/python benchmarks/screening_run.py --out benchmarks/out/screening

Makes EMT-labelled frames (LBFGS relaxations of fairchem-data-oc placements of O on a
Cu(111) and a Pt(100) 2x2x3 slab, plus rattles: the helper of
tests/e2e/test_fairchem2_screening.py), fits bins, trains the conserving categorical eSEN
(tiny backbone, 30 epochs) through fairchem, then runs ``fairchem-categorical screen`` on
both slabs with EMT's O gas reference. Prints the ranked table and the timings.
``--labeller sevennet:7net-0`` labels the frames and the O reference with SevenNet-0 instead
(the ``realistic`` extra; a stand-in for DFT, see the README's "Realistic data").
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.e2e.test_fairchem2_screening import (  # noqa: E402
    SLABS,
    _dataset,
    _emt_references,
    _small_slab,
    _train,
    emt_frames,
)


def main() -> None:
    from ase.io import write

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "out" / "screening")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--num-placements", type=int, default=8)
    p.add_argument("--labeller", default="emt", help="emt (default) or sevennet:7net-0")
    args = p.parse_args()
    from fairchem_categorical.data.labellers import labeller

    calc = labeller(args.labeller)
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    frames = [f for i, s in enumerate(SLABS)
              for f in emt_frames(_small_slab(s), "O", placements=3, rattles=4, seed=i,
                                  calculator=calc)]
    train, bins = _dataset(frames, args.out)
    t1 = time.time()
    ckpt = _train("esen_categorical_conserving.yaml", train, bins, args.out / "runs",
                  args.epochs, "forces_coefficient=50")
    t2 = time.time()
    slabs = []
    for spec in SLABS:
        path = args.out / f"{spec.replace('/', '_')}.extxyz"
        write(path, _small_slab(spec))
        slabs.append(str(path))
    cmd = [sys.executable, "-m", "fairchem_categorical.app.cli", "screen", "--checkpoint",
           str(ckpt), "--slab", *slabs, "--adsorbate", "*O", "--num-placements",
           str(args.num_placements), "--fmax", "0.05", "--steps", "200", "--coverage", "0.9",
           "--top-k", "3", "--gas-references", str(_emt_references(args.out, calc)), "--out",
           str(args.out / "screen")]
    print(" ".join(cmd))
    subprocess.run(cmd, check=True)
    print(f"{len(frames)} training frames in {t1 - t0:.0f} s, training {t2 - t1:.0f} s, "
          f"screen {time.time() - t2:.0f} s")


if __name__ == "__main__":
    main()
