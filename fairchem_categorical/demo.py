"""The main job: embedded data -> bins -> categorical and scalar models -> table + plot.

Runs the installed fairchem line: eSEN on fairchem-core 2.x (``.venv``), EquiformerV2
on fairchem-core 1.10 (``.venv-fairchem1``).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from fairchem_categorical.cli import REPO_CONFIGS, installed_line, predict_files, train

# per fairchem line: backbone, categorical config, scalar config, dataset format
LINES = {
    2: ("eSEN", "esen_categorical_conserving.yaml", "esen_scalar_conserving.yaml", "aselmdb"),
    1: ("EquiformerV2", "equiformer_v2_categorical.yml", "equiformer_v2_scalar.yml",
        "pyg-lmdb"),
}
DATA_FILE = {"aselmdb": "data.aselmdb", "pyg-lmdb": "data.lmdb"}
DEFAULT_EPOCHS = 25


def _say(msg: str) -> None:
    print(msg, flush=True)


def run_demo(out: Path, max_epochs: int | None = None, n_systems: int = 24, seed: int = 0,
             configs: Path | None = None) -> dict[str, dict[str, float]]:
    """Run every step, print the comparison table, return it (also in out/summary.json)."""
    from fairchem_categorical.binsfile import fit_bins_files, write_bins
    from fairchem_categorical.data import make_dataset
    from fairchem_categorical.plots import plot_energy_distributions
    from fairchem_categorical.predictions import read_predictions, write_predictions
    from fairchem_categorical.uncertainty import evaluate_predictions

    t0 = time.time()
    line = installed_line()
    if line not in LINES:
        raise RuntimeError("the demo needs fairchem-core (2.x in .venv or 1.10 in "
                           ".venv-fairchem1); see the README")
    backbone, categorical, scalar, fmt = LINES[line]
    epochs = max_epochs or DEFAULT_EPOCHS
    configs = configs or REPO_CONFIGS / f"fairchem{line}"
    out.mkdir(parents=True, exist_ok=True)
    data = out / "data"
    _say(f"[1/5] embedded dataset ({n_systems} EMT adsorbate+slab systems, seed {seed}, "
         f"{fmt}) for fairchem-core {line}.x")
    if (data / "test" / DATA_FILE[fmt]).is_file():
        splits = {s: data / s for s in ("train", "val", "test")}
        _say(f"  reusing {data}")
    else:
        splits = make_dataset(data, n_systems=n_systems, seed=seed, progress=_say, fmt=fmt)
    _say("[2/5] fit-bins on the train split")
    fit = fit_bins_files([splits["train"]])
    bins = write_bins(fit, out / "bins.yaml", [splits["train"]])
    _say(f"  support [{fit.support.low:.3f}, {fit.support.high:.3f}] x {fit.support.num_bins} "
         f"bins -> {bins}")

    results: dict[str, dict[str, float]] = {}
    for step, (name, config) in enumerate((("categorical", categorical), ("scalar", scalar)), 3):
        _say(f"[{step}/5] training {name} {backbone} ({config}, {epochs} epochs) through "
             "fairchem")
        t = time.time()
        # 2.x scalar configs take their element references from the bins; 1.10 ones fit
        # their own with fairchem
        ckpt = train(configs / config, str(splits["train"]), str(splits["val"]),
                     bins=bins if name == "categorical" or line == 2 else None,
                     max_epochs=epochs, seed=seed, run_dir=out / "runs" / name)
        train_s = time.time() - t
        _say(f"  checkpoint {ckpt} ({train_s:.0f} s)")
        preds = predict_files(ckpt, [splits["test"]])
        csv_path, npz_path = write_predictions(preds, out / f"{name}_test.csv")
        columns = read_predictions(csv_path)
        results[name] = {**evaluate_predictions(columns, dict(np.load(npz_path))),
                         "train_seconds": train_s}
        if name == "categorical":
            png = plot_energy_distributions(npz_path, columns, out / "energy_distributions.png",
                                            model_name=f"Categorical {backbone}")
            _say(f"  predictions {csv_path}; plot {png}")

    _say("[5/5] test-set comparison (same backbone, data, references and budget)")
    table = format_table(results)
    _say(table)
    (out / "summary.json").write_text(json.dumps(results, indent=2))
    (out / "summary.md").write_text(table + "\n")
    _say(f"done in {time.time() - t0:.0f} s; summary in {out / 'summary.json'}")
    return results


DEMO_ROWS = [
    ("energy MAE (eV)", "energy_mae", "{:.4f}"),
    ("energy MAE (eV/atom)", "energy_mae_per_atom", "{:.5f}"),
    ("force MAE (eV/A)", "forces_mae", "{:.4f}"),
    ("Spearman(energy_std, abs. error)", "spearman_energy_std", "{:.3f}"),
    ("Spearman(entropy, abs. error)", "spearman_energy_entropy", "{:.3f}"),
    ("training time (s)", "train_seconds", "{:.0f}"),
]


def format_table(results: dict[str, dict[str, float]]) -> str:
    from fairchem_categorical.tables import markdown_table

    return markdown_table(results, DEMO_ROWS)
