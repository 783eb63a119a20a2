"""What K histogram output layers cost: training step and inference, K = 1, 4, 8 vs scalar.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/shallow_cost.py \
        --out benchmarks/results/shallow_cost.md

The uncertainty benchmark's wall-clock training times compare models trained at different
loads; this measures the cost side by side in one process (``overhead_fairchem2``'s models
and batches, ``timing.interleaved``: every case once per repetition, order rotated), for
the shipped conserving eSEN config with ``+heads.energy.num_members=K`` against fairchem's
scalar head on the same backbone. Inference with member forces (one backward pass per
member, ``member_forces``) is timed too.
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "benchmarks")]

import overhead_fairchem2 as suite  # noqa: E402
from timing import Ratio, interleaved, median_ms  # noqa: E402


def measure(size: str, members: list[int], batch_size: int, reps: int) -> list[dict]:
    suite._import_fairchem()
    root = Path(tempfile.mkdtemp(prefix="shallow-cost-"))
    data = suite.make_data(root, print)
    overrides = [*suite._data_overrides(data, root), *suite.size_overrides(size)]
    cat_cfg, scalar_cfg = suite.MODELS["esen"]
    variants = {"scalar": suite.Variant.build(scalar_cfg, overrides, batch_size, "cpu")}
    for k in members:
        extra = [f"+heads.energy.num_members={k}"] if k > 1 else []
        variants[f"K={k}"] = suite.Variant.build(cat_cfg, overrides + extra, batch_size, "cpu")
    spread = {}
    for k in members:
        if k > 1:  # a copy of the K-member model that also computes its members' forces
            twin = copy.copy(variants[f"K={k}"])
            twin.infer_model = copy.deepcopy(twin.infer_model)
            twin.infer_model.output_heads["energy"].member_forces = True
            spread[f"K={k} + member forces"] = twin.infer_step
    train = interleaved({n: v.train_step for n, v in variants.items()}, reps)
    infer = interleaved({**{n: v.infer_step for n, v in variants.items()}, **spread}, reps)
    rows = []
    for name in [*variants, *spread]:
        row = {"model": name, "size": size}
        if name in train:
            row["train_ms"] = median_ms(train[name])
            row["train_x"] = Ratio.of(train[name], train["scalar"]).median
        row["infer_ms"] = median_ms(infer[name])
        row["infer_x"] = Ratio.of(infer[name], infer["scalar"]).median
        rows.append(row)
    return rows


def main() -> None:
    import torch

    torch.set_num_threads(1)
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--sizes", nargs="+", default=["cpu", "paper"], choices=list(suite.SIZES))
    ap.add_argument("--members", type=int, nargs="+", default=[1, 4, 8])
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--reps", type=int, default=10)
    a = ap.parse_args()
    rows = [r for size in a.sizes for r in measure(size, a.members, a.batch_size, a.reps)]
    lines = ["| size | model | train step (ms) | x scalar | inference (ms) | x scalar |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        train = (f"{r['train_ms']:.1f} | {r['train_x']:.3f}" if "train_ms" in r
                 else "n/a | n/a")
        lines.append(f"| {suite.size_label(r['size'])} | {r['model']} | {train} | "
                     f"{r['infer_ms']:.1f} | {r['infer_x']:.3f} |")
    meta = (f"\n\n{time.strftime('%Y-%m-%d %H:%M')} UTC, {platform.machine()}, "
            f"{os.cpu_count()} cores, CPU, 1 thread, batch {a.batch_size}, "
            f"{a.reps} interleaved repetitions (median ratio per repetition)\n")
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text("\n".join(lines) + meta)
    print("\n".join(lines) + meta)


if __name__ == "__main__":
    main()
