"""How often the categorical direct-force eSEN relaxes to fmax 0.05 eV/A, across seeds and
torch thread counts (the model of tests/e2e/test_fairchem2_screening.py's relax test).

    .venv/bin/python benchmarks/direct_relax.py [--seeds 0 1 2 3 4] [--threads 1 2]
        [--epochs 40] [--out benchmarks/out/direct_relax] [--override key=value ...]

Per (seed, threads): trains the direct-force model through fairchem on the test's EMT frames
(Cu(111) 2x2x3 + O, one heuristic placement relaxed by EMT, 20 rattles) with
``OMP_NUM_THREADS`` set, then relaxes that placement with BFGS (fmax 0.05, 200 steps) on the
same thread count. Prints a table (relaxed, steps, final fmax, force MAE on the training
frames) and the relax rate; writes ``direct_relax.md``/``.json`` under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def _one(args: argparse.Namespace) -> None:
    """One (seed, threads) run, in its own process so the thread count holds everywhere."""
    import numpy as np
    import torch
    from ase.optimize import BFGS

    from fairchem_categorical.fairchem2 import screening as tools
    from fairchem_categorical.fairchem2.calculator import CategoricalCalculator
    from fairchem_categorical.screening import adsorbate_spec
    from tests.e2e.test_fairchem2_screening import SLABS, _dataset, _small_slab, _train, emt_frames

    threads = args.threads[0]
    torch.set_num_threads(threads)
    work = args.out / f"seed{args.seed}_t{threads}"
    slab = _small_slab(SLABS[0])
    frames = emt_frames(slab, "O", placements=1, rattles=20, seed=3)
    train, bins = _dataset(frames, work)
    t0 = time.time()
    ckpt = _train("esen_categorical_direct.yaml", train, bins, work / "runs", args.epochs,
                  f"seed={args.seed}", *args.override)
    t_train = time.time() - t0
    calc = CategoricalCalculator.from_model_checkpoint(ckpt, device="cpu")
    errors = []
    for frame in frames:
        atoms = frame.copy()
        free = atoms.get_tags() != 0
        target = frame.get_forces(apply_constraint=False)
        atoms.calc = calc
        pred = atoms.get_forces(apply_constraint=False)
        errors.append(np.abs(pred - target)[free].mean())
    start = tools.place(slab, adsorbate_spec("*O", tools.adsorbate_database()), 1,
                        "heuristic", seed=3)[0]
    atoms = start.copy()
    atoms.calc = calc
    opt = BFGS(atoms, logfile=None)
    relaxed = bool(opt.run(fmax=0.05, steps=200))
    fmax = float(np.linalg.norm(atoms.get_forces(), axis=1).max())
    print(json.dumps({"seed": args.seed, "threads": threads, "relaxed": relaxed,
                      "steps": opt.nsteps, "final_fmax": fmax,
                      "force_mae_train": float(np.mean(errors)), "train_s": t_train}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--override", nargs="*", default=[], help="Hydra overrides for training")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "out" / "direct_relax")
    p.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args()
    args.out = args.out.resolve()
    if args.one:
        _one(args)
        return
    from fairchem_categorical.report.tables import rows_table

    rows = []
    for threads in args.threads:
        for seed in args.seeds:
            env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
            cmd = [sys.executable, __file__, "--one", "--seed", str(seed), "--threads",
                   str(threads), "--epochs", str(args.epochs), "--out", str(args.out),
                   "--override", *args.override]
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO)
            if proc.returncode != 0:
                sys.exit(f"seed {seed}, {threads} threads failed:\n{proc.stderr[-3000:]}")
            rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
            r = rows[-1]
            print(f"seed {seed} threads {threads}: relaxed={r['relaxed']} steps={r['steps']} "
                  f"fmax={r['final_fmax']:.3f} force MAE={r['force_mae_train']:.3f} "
                  f"({r['train_s']:.0f} s)", flush=True)
    rate = sum(r["relaxed"] for r in rows) / len(rows)
    table = rows_table(["seed", "threads", "relaxed", "steps", "final fmax (eV/A)",
                        "force MAE, training frames (eV/A)"],
                       [[r["seed"], r["threads"], r["relaxed"], r["steps"],
                         f"{r['final_fmax']:.3f}", f"{r['force_mae_train']:.3f}"] for r in rows])
    text = (f"{table}\n\nrelaxed to fmax 0.05 within 200 BFGS steps: "
            f"{sum(r['relaxed'] for r in rows)} of {len(rows)} ({rate:.0%}); "
            f"overrides: {' '.join(args.override) or 'none'}\n")
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "direct_relax.md").write_text(text)
    (args.out / "direct_relax.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
