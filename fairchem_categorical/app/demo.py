"""The main job: embedded data -> bins -> categorical and scalar models -> table + plots.

The categorical model's uncertainty is fitted as a user fits it (``fit-uncertainty``: the
feature statistics on the training split, the predictive distribution's scales on the
validation split), so the table shows what the project is for: how well
``energy_uncertainty`` ranks the errors, whether its 90% intervals hold, and how well
``ood_score`` tells an out-of-distribution split (adsorbates never seen in training)
from the test set; the plots show the same at a glance.

Runs the installed fairchem line: eSEN on fairchem-core 2.x (``.venv``), EquiformerV2
on fairchem-core 1.10 (``.venv-fairchem1``); ``lines.LINES`` says which configs.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from fairchem_categorical.app import checks, lines
from fairchem_categorical.app.jobs import fit_uncertainty, predict_files, train

DEFAULT_EPOCHS = 25
#: the out-of-distribution split the demo scores ``ood_score`` on (``data.OOD_SPLITS``)
OOD_SPLIT = "adsorbates"
OOD_SYSTEMS = 4
DEMO_ROWS = [
    ("energy MAE (eV)", "energy_mae", "{:.4f}"),
    ("energy MAE (eV/atom)", "energy_mae_per_atom", "{:.5f}"),
    ("force MAE (eV/A)", "forces_mae", "{:.4f}"),
    ("Spearman(energy_uncertainty, abs. error) per atom",
     "spearman_energy_uncertainty_per_atom", "{:.3f}"),
    ("Spearman(atom count, abs. error) per atom (trivial baseline)",
     "spearman_natoms_per_atom", "{:.3f}"),
    ("90% interval coverage (energy_uncertainty; ideal 0.90)",
     "energy_coverage90_uncertainty", "{:.3f}"),
    ("miscalibration area (energy_uncertainty; ideal 0)",
     "miscalibration_area_uncertainty", "{:.3f}"),
    (f"AUROC of ood_score, test vs unseen {OOD_SPLIT}", "auroc_ood_score", "{:.3f}"),
    ("Spearman(energy_std, abs. error)", "spearman_energy_std", "{:.3f}"),
    ("training time (s)", "train_seconds", "{:.0f}"),
]


def _say(msg: str) -> None:
    print(msg, flush=True)


def run_demo(out: Path, max_epochs: int | None = None, n_systems: int = 24, seed: int = 0,
             configs: Path | None = None, device: str | None = None
             ) -> dict[str, dict[str, float]]:
    """Run every step, print the comparison table, return it (also in out/summary.json).
    ``device`` (cpu, cuda, cuda:N): where both models train and predict (None: the
    configs' device for training, the CPU for predictions)."""
    from fairchem_categorical.bins import fit_bins_files, write_bins
    from fairchem_categorical.data import make_dataset, make_ood_datasets
    from fairchem_categorical.data.common import format_suffix
    from fairchem_categorical.predictions import as_columns, write_predictions
    from fairchem_categorical.report.metrics import evaluate_predictions

    t0 = time.time()
    line = lines.current("the demo")
    if device is not None:
        checks.device(device)
    epochs = max_epochs or DEFAULT_EPOCHS
    configs = configs or line.configs
    out.mkdir(parents=True, exist_ok=True)
    data = out / "data"
    _say(f"[1/5] embedded dataset ({n_systems} EMT adsorbate+slab systems, seed {seed}, "
         f"{line.data_format}) for {line.label}, and {OOD_SYSTEMS} systems with unseen "
         f"{OOD_SPLIT}")
    suffix = format_suffix(line.data_format)
    if (data / "test" / f"data{suffix}").is_file() and (
            data / OOD_SPLIT / f"data{suffix}").is_file():
        splits = {s: data / s for s in ("train", "val", "test", OOD_SPLIT)}
        _say(f"  reusing {data}")
    else:
        splits = make_dataset(data, n_systems=n_systems, seed=seed, progress=_say,
                              fmt=line.data_format, overwrite=True)
        splits.update(make_ood_datasets(data, n_systems=OOD_SYSTEMS, splits=(OOD_SPLIT,),
                                        progress=_say, overwrite=True,
                                        fmt=line.data_format))
    _say("[2/5] fit-bins on the train split")
    fit = fit_bins_files([splits["train"]])
    bins = write_bins(fit, out / "bins.yaml", [splits["train"]])
    _say(f"  support [{fit.support.low:.3f}, {fit.support.high:.3f}] x {fit.support.num_bins} "
         f"bins -> {bins}")

    dev = device or "cpu"
    results: dict[str, dict[str, float]] = {}
    models = (("categorical", line.categorical_config), ("scalar", line.scalar_config))
    for step, (name, config) in enumerate(models, 3):
        _say(f"[{step}/5] training {name} {line.backbone} ({config}, {epochs} epochs) through "
             "fairchem")
        t = time.time()
        takes_bins = name == "categorical" or line.scalar_takes_bins
        ckpt = train(configs / config, str(splits["train"]), str(splits["val"]),
                     bins=bins if takes_bins else None, max_epochs=epochs, seed=seed,
                     run_dir=out / "runs" / name, say=_say, device=device)
        train_s = time.time() - t
        _say(f"  checkpoint {ckpt} ({train_s:.0f} s)")
        if name == "categorical":
            _say("  fit-uncertainty: feature statistics on train, the predictive "
                 "distribution's scales on val")
            fitted = out / "runs" / "categorical_fitted.pt"
            fit_uncertainty(ckpt, [splits["train"]], [splits["val"]], fitted, device=dev)
            ckpt = fitted
        preds = predict_files(ckpt, [splits["test"]], device=dev)
        csv_path, _ = write_predictions(preds, out / f"{name}_test.csv")
        columns, arrays = as_columns(preds)
        ood_columns, _ = as_columns(predict_files(ckpt, [splits[OOD_SPLIT]], device=dev))
        results[name] = {**evaluate_predictions(columns, arrays, ood_columns),
                         "train_seconds": train_s}
        if name == "categorical":
            pngs = plot_uncertainty(columns, arrays, ood_columns, out,
                                    f"Categorical {line.backbone}")
            _say(f"  predictions {csv_path}; plots {', '.join(str(p) for p in pngs)}")

    _say("[5/5] test-set comparison (same backbone, data, references and budget)")
    table = format_table(results)
    _say(table)
    (out / "summary.json").write_text(json.dumps(results, indent=2))
    (out / "summary.md").write_text(table + "\n")
    _say(f"done in {time.time() - t0:.0f} s; summary in {out / 'summary.json'}")
    return results


def plot_uncertainty(columns: dict, arrays: dict, ood_columns: dict, out: Path,
                     model_name: str) -> list[Path]:
    """What a person reads at a glance: six predicted histograms against their targets,
    the error against its error bar (per atom), the 90%-style calibration curve and the
    OOD scores of the test set against the unseen split."""
    import numpy as np

    from fairchem_categorical.predictions import predictive_from_files
    from fairchem_categorical.report.metrics import coverage_curve
    from fairchem_categorical.report.plots import (
        plot_calibration_curve,
        plot_energy_distributions,
        plot_error_vs_uncertainty,
        plot_score_distributions,
    )

    n = columns["natoms"]
    err = np.abs(columns["energy"] - columns["energy_target"])
    pngs = [plot_energy_distributions(arrays, columns, out / "energy_distributions.png",
                                      model_name=model_name),
            plot_error_vs_uncertainty(columns["energy_uncertainty"] / n, err / n,
                                      out / "error_vs_energy_uncertainty.png",
                                      label="energy_uncertainty (eV/atom)")]
    dist = predictive_from_files(columns, arrays)
    if dist is not None:
        def interval(c: float) -> tuple[np.ndarray, np.ndarray]:
            lo, hi = dist.interval(c)
            return lo.numpy(), hi.numpy()

        pngs.append(plot_calibration_curve(
            {"energy_uncertainty": coverage_curve(interval, columns["energy_target"])},
            out / "calibration.png"))
    pngs.append(plot_score_distributions(
        {"test": columns["ood_score"], f"unseen {OOD_SPLIT}": ood_columns["ood_score"]},
        out / "ood_scores.png"))
    return pngs


def format_table(results: dict[str, dict[str, float]]) -> str:
    from fairchem_categorical.report.tables import markdown_table

    return markdown_table(results, DEMO_ROWS)
