"""The main job: embedded data -> bins -> categorical and scalar models -> table + plot.

Runs the installed fairchem line: eSEN on fairchem-core 2.x (``.venv``), EquiformerV2
on fairchem-core 1.10 (``.venv-fairchem1``); ``lines.LINES`` says which configs.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from fairchem_categorical.app import checks, lines
from fairchem_categorical.app.jobs import predict_files, train

DEFAULT_EPOCHS = 25
DEMO_ROWS = [
    ("energy MAE (eV)", "energy_mae", "{:.4f}"),
    ("energy MAE (eV/atom)", "energy_mae_per_atom", "{:.5f}"),
    ("force MAE (eV/A)", "forces_mae", "{:.4f}"),
    ("Spearman(energy_std, abs. error)", "spearman_energy_std", "{:.3f}"),
    ("Spearman(entropy, abs. error)", "spearman_energy_entropy", "{:.3f}"),
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
    from fairchem_categorical.data import make_dataset
    from fairchem_categorical.data.common import format_suffix
    from fairchem_categorical.predictions import as_columns, write_predictions
    from fairchem_categorical.report.metrics import evaluate_predictions
    from fairchem_categorical.report.plots import plot_energy_distributions

    t0 = time.time()
    line = lines.current("the demo")
    if device is not None:
        checks.device(device)
    epochs = max_epochs or DEFAULT_EPOCHS
    configs = configs or line.configs
    out.mkdir(parents=True, exist_ok=True)
    data = out / "data"
    _say(f"[1/5] embedded dataset ({n_systems} EMT adsorbate+slab systems, seed {seed}, "
         f"{line.data_format}) for {line.label}")
    if (data / "test" / f"data{format_suffix(line.data_format)}").is_file():
        splits = {s: data / s for s in ("train", "val", "test")}
        _say(f"  reusing {data}")
    else:
        splits = make_dataset(data, n_systems=n_systems, seed=seed, progress=_say,
                              fmt=line.data_format)
    _say("[2/5] fit-bins on the train split")
    fit = fit_bins_files([splits["train"]])
    bins = write_bins(fit, out / "bins.yaml", [splits["train"]])
    _say(f"  support [{fit.support.low:.3f}, {fit.support.high:.3f}] x {fit.support.num_bins} "
         f"bins -> {bins}")

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
        preds = predict_files(ckpt, [splits["test"]], device=device or "cpu")
        csv_path, _ = write_predictions(preds, out / f"{name}_test.csv")
        columns, arrays = as_columns(preds)
        results[name] = {**evaluate_predictions(columns, arrays), "train_seconds": train_s}
        if name == "categorical":
            png = plot_energy_distributions(arrays, columns, out / "energy_distributions.png",
                                            model_name=f"Categorical {line.backbone}")
            _say(f"  predictions {csv_path}; plot {png}")

    _say("[5/5] test-set comparison (same backbone, data, references and budget)")
    table = format_table(results)
    _say(table)
    (out / "summary.json").write_text(json.dumps(results, indent=2))
    (out / "summary.md").write_text(table + "\n")
    _say(f"done in {time.time() - t0:.0f} s; summary in {out / 'summary.json'}")
    return results


def format_table(results: dict[str, dict[str, float]]) -> str:
    from fairchem_categorical.report.tables import markdown_table

    return markdown_table(results, DEMO_ROWS)
