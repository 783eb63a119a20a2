"""Categorical vs scalar vs deep ensemble of scalar eSEN, in one run on the same data.

    .venv/bin/python benchmarks/uncertainty.py --out benchmarks/out   (or: make benchmark)

Trains, with the shipped configs, the same backbone and the same budget:
1. eSEN with categorical heads (one model),
2. eSEN with fairchem's scalar heads (one model),
3. a deep ensemble of ``--members`` scalar eSEN models (seeds 0..M-1); its uncertainty is
   the standard deviation of the members' energies,
then predicts an in-distribution test split and an out-of-distribution split, fits a
temperature for the categorical model on the validation split, and writes
``results.json`` and ``results.md`` (one table) plus plots to ``--out``.

Out-of-distribution split: the same kind of adsorbate+slab systems (other random systems,
seed 1000) rattled 4x harder than anything in training (``rattle_scale=4``), so forces and
energies leave the training range; detecting them is what a screening user needs.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from fairchem_categorical.app.jobs import train  # noqa: E402
from fairchem_categorical.bins import fit_bins_files, write_bins  # noqa: E402
from fairchem_categorical.calibration import fit_from_predictions, retemper  # noqa: E402
from fairchem_categorical.data import make_dataset, read_frames  # noqa: E402
from fairchem_categorical.ensemble import combine  # noqa: E402
from fairchem_categorical.predictions import (  # noqa: E402
    StructurePrediction,
    as_columns,
    write_predictions,
)
from fairchem_categorical.report.metrics import evaluate_predictions  # noqa: E402
from fairchem_categorical.report.tables import markdown_table  # noqa: E402

CONFIGS = REPO / "configs" / "fairchem2"
# The benchmark's backbone: small enough that 7 trainings fit a CPU budget.
BACKBONE = [
    "backbone.sphere_channels=16", "backbone.hidden_channels=16", "backbone.edge_channels=16",
    "backbone.lmax=1", "backbone.mmax=1", "backbone.num_distance_basis=32",
]
ROWS = [
    ("energy MAE (eV)", "energy_mae", "{:.3f}"),
    ("energy MAE (eV/atom)", "energy_mae_per_atom", "{:.4f}"),
    ("force MAE (eV/A)", "forces_mae", "{:.3f}"),
    ("Spearman(std, abs. energy error)", "spearman_energy_std", "{:.3f}"),
    ("Spearman(entropy, abs. energy error)", "spearman_energy_entropy", "{:.3f}"),
    ("rejection AUC ratio (1 = oracle)", "rejection_auc_ratio_energy_std", "{:.3f}"),
    ("AUROC OOD (std)", "auroc_energy_std", "{:.3f}"),
    ("AUROC OOD (std per atom)", "auroc_energy_std_per_atom", "{:.3f}"),
    ("AUROC OOD (entropy)", "auroc_energy_entropy", "{:.3f}"),
    ("AUROC OOD (edge mass)", "auroc_energy_edge_mass", "{:.3f}"),
    ("NLL (nats, energy in eV)", "energy_nll", "{:.3f}"),
    ("miscalibration area", "miscalibration_area", "{:.3f}"),
    ("ENCE", "ence_energy", "{:.3f}"),
    ("models trained", "models", "{:.0f}"),
    ("training time (s)", "train_seconds", "{:.0f}"),
    ("inference time (ms/structure)", "inference_ms", "{:.1f}"),
]


def _say(msg: str) -> None:
    print(msg, flush=True)


def _predict(ckpt: Path, frames: list) -> tuple[list[StructurePrediction], float]:
    from fairchem_categorical.fairchem2.predict import predict_atoms

    t = time.time()
    preds = predict_atoms(ckpt, frames)
    return preds, (time.time() - t) / len(frames) * 1000


def _evaluate(name: str, preds: list, ood: list, out: Path) -> dict[str, float]:
    write_predictions(preds, out / f"{name}_test.csv")
    write_predictions(ood, out / f"{name}_ood.csv")
    return evaluate_predictions(*as_columns(preds), as_columns(ood)[0])


def _with_temperature(preds: list[StructurePrediction], t: float) -> list[StructurePrediction]:
    """The same predictions re-decoded at temperature ``t`` (histograms sharpen or widen)."""
    new = retemper(np.stack([p.energy_probs for p in preds]),
                   np.stack([p.energy_bin_centers for p in preds]), t)
    return [StructurePrediction(**{**p.__dict__, **{k: v[i] if v.ndim > 1 else float(v[i])
                                                   for k, v in new.items()}})
            for i, p in enumerate(preds)]


def run(out: Path, epochs: int, members: int, n_systems: int) -> dict[str, dict[str, float]]:
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    _say("[data] embedded train/val/test and a hotter out-of-distribution split")
    data = make_dataset(out / "data", n_systems=n_systems, seed=0, overwrite=True)
    ood_dir = make_dataset(out / "ood", n_systems=6, seed=1000, splits={"ood": 1.0},
                           rattle_scale=4.0, overwrite=True)["ood"]
    fit = fit_bins_files([data["train"]])
    bins = write_bins(fit, out / "bins.yaml", [data["train"]])
    test, ood = read_frames([data["test"]]), read_frames([ood_dir])
    val = read_frames([data["val"]])

    def fit_model(config: str, seed: int, tag: str) -> tuple[Path, float]:
        t = time.time()
        ckpt = train(CONFIGS / config, str(data["train"]), str(data["val"]), bins=bins,
                     max_epochs=epochs, seed=seed, run_dir=out / "runs" / tag,
                     overrides=BACKBONE)
        _say(f"  trained {tag} in {time.time() - t:.0f} s")
        return ckpt, time.time() - t

    results: dict[str, dict[str, float]] = {}
    _say("[1] categorical eSEN")
    ckpt, secs = fit_model("esen_categorical_conserving.yaml", 0, "categorical")
    cat_test, ms = _predict(ckpt, test)
    cat_ood, _ = _predict(ckpt, ood)
    results["categorical"] = {**_evaluate("categorical", cat_test, cat_ood, out),
                              "models": 1, "train_seconds": secs, "inference_ms": ms}
    cat_val, _ = _predict(ckpt, val)
    t_fit = fit_from_predictions(cat_val)
    results["categorical + temperature"] = {
        **_evaluate("categorical_T", _with_temperature(cat_test, t_fit),
                    _with_temperature(cat_ood, t_fit), out),
        "models": 1, "train_seconds": secs, "inference_ms": ms, "temperature": t_fit}

    _say(f"[2,3] scalar eSEN x {members} seeds (member 0 is the scalar baseline)")
    member_test, member_ood, total, ms_total = [], [], 0.0, 0.0
    for seed in range(members):
        ckpt, secs = fit_model("esen_scalar_conserving.yaml", seed, f"scalar_seed{seed}")
        p_test, ms = _predict(ckpt, test)
        p_ood, _ = _predict(ckpt, ood)
        member_test.append(p_test)
        member_ood.append(p_ood)
        total, ms_total = total + secs, ms_total + ms
        if seed == 0:
            results["scalar"] = {**_evaluate("scalar", p_test, p_ood, out), "models": 1,
                                 "train_seconds": secs, "inference_ms": ms}
    results[f"ensemble of {members} scalar"] = {
        **_evaluate("ensemble", combine(member_test), combine(member_ood), out),
        "models": members, "train_seconds": total, "inference_ms": ms_total}
    results["_meta"] = {"epochs": epochs, "members": members, "n_systems": n_systems,
                        "test_structures": len(test), "ood_structures": len(ood),
                        "seconds": time.time() - t0}
    return results


def format_table(results: dict[str, dict[str, float]]) -> str:
    return markdown_table(results, ROWS)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "out")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--members", type=int, default=5)
    ap.add_argument("--n-systems", type=int, default=24)
    args = ap.parse_args()
    results = run(args.out, args.epochs, args.members, args.n_systems)
    table = format_table(results)
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    (args.out / "results.md").write_text(
        f"{table}\n\nMachine: {platform.machine()}, {platform.processor() or 'cpu'}; "
        f"{results['_meta']}\n")
    _say(table)


if __name__ == "__main__":
    main()
