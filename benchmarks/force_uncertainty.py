"""Per-atom force uncertainty of conservative shallow ensembles: does it rank and size errors?

    .venv/bin/python benchmarks/force_uncertainty.py --run benchmarks/out \
        --out benchmarks/results/force_uncertainty.md

Takes the shallow-ensemble checkpoints an ``uncertainty.py`` run trained (``--run``: its
``--out``; every ``tasks/categorical_k<K>_seed<s>.pkl``), turns on ``member_forces`` (the
spread of the members' forces, one backward pass per member: what the calculators report
as ``forces_uncertainty``) and predicts the run's test and OOD splits. Per free atom:
Spearman(forces_uncertainty, |F - F_ref|), the ratio RMSE / RMV (1: the spread has the
error's size; > 1: too small) raw and after the scale calibrate fits (here fitted on the
run's val split), and the fraction of atoms whose error lies within one scaled spread (an
RMS-sized bar: ~61% for 3-D Gaussian errors); AUROC of the per-structure mean spread, test
vs each OOD split. Also the inference cost with and without the member forces.
"""

from __future__ import annotations

import argparse
import json
import pickle
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

SPLITS = ("val", "test", "adsorbates", "metal", "facet", "hot")


def atom_rows(preds: list) -> tuple[np.ndarray, np.ndarray]:
    """(spread, |error|) of every free atom with a force target."""
    spread, err = [], []
    for p in preds:
        if p.forces_target is None or p.forces_std is None:
            continue
        free = np.ones(p.natoms, bool) if p.fixed is None else p.fixed == 0
        spread.append(p.forces_std[free])
        err.append(np.linalg.norm(p.forces[free] - p.forces_target[free], axis=1))
    return np.concatenate(spread), np.concatenate(err)


def measure(checkpoint: str, splits: dict[str, str]) -> dict[str, float]:
    from fairchem_categorical.data import read_frames
    from fairchem_categorical.fairchem2.heads import CategoricalEnergyHead
    from fairchem_categorical.fairchem2.predict import load_unit, predict_unit
    from fairchem_categorical.report.metrics import auroc, spearman

    unit = load_unit(checkpoint)
    head = unit.head(CategoricalEnergyHead)
    frames = {name: read_frames([splits[name]]) for name in SPLITS}
    t = time.perf_counter()
    predict_unit(unit, frames["test"])
    plain = time.perf_counter() - t
    head.member_forces = True
    t = time.perf_counter()
    preds = {"test": predict_unit(unit, frames["test"])}
    with_spread = time.perf_counter() - t
    preds.update({name: predict_unit(unit, frames[name]) for name in SPLITS if name != "test"})
    u_val, e_val = atom_rows(preds["val"])
    # the scale calibrate fits (app.jobs.calibrate.member_force_scale), on the val split
    scale = float(np.sqrt(np.mean(e_val**2) / np.mean(u_val**2)))
    u, e = atom_rows(preds["test"])
    out = {"members": head.num_members,
           "spearman_forces_uncertainty_per_atom": spearman(u, e),
           "rmse_over_rmv_raw": float(np.sqrt(np.mean(e**2)) / np.sqrt(np.mean(u**2))),
           "scale_fitted_on_val": scale,
           "rmse_over_rmv_scaled": float(np.sqrt(np.mean(e**2))
                                         / np.sqrt(np.mean((scale * u) ** 2))),
           "within_1_scaled_spread": float(np.mean(e <= scale * u)),
           "mean_error": float(e.mean()),
           "inference_cost_member_forces": with_spread / plain}
    test_mean = [float(p.forces_std.mean()) for p in preds["test"]]
    for name in SPLITS[2:]:
        out[f"auroc_{name}"] = auroc(test_mean, [float(p.forces_std.mean())
                                                 for p in preds[name]])
    return out


def main() -> None:
    import torch

    torch.set_num_threads(1)
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, required=True, help="an uncertainty.py --out folder")
    ap.add_argument("--out", type=Path, required=True, help="markdown table to write")
    a = ap.parse_args()
    splits = json.loads((a.run / "splits.json").read_text())
    rows = {}
    for path in sorted((a.run / "tasks").glob("categorical_k*_seed*.pkl")):
        with path.open("rb") as fh:
            rec = pickle.load(fh)
        rows[path.stem] = measure(rec["checkpoint"], splits)
        print(path.stem, rows[path.stem], flush=True)
    keys = list(next(iter(rows.values())))
    lines = ["| model | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    for name, row in rows.items():
        lines.append(f"| {name} | " + " | ".join(f"{row[k]:.3g}" for k in keys) + " |")
    meta = f"\n\n{time.strftime('%Y-%m-%d %H:%M')} UTC, run {a.run}, test + OOD splits\n"
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text("\n".join(lines) + meta)
    a.out.with_suffix(".json").write_text(json.dumps(rows, indent=1))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
