"""``fairchem-categorical``: data, bins, training through fairchem, prediction, the demo."""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

REPO_CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def _say(msg: str) -> None:
    print(msg, flush=True)


# -- make-dataset / convert ------------------------------------------------------------
def cmd_make_dataset(args: argparse.Namespace) -> int:
    from fairchem_categorical.data import make_dataset

    paths = make_dataset(args.out, n_systems=args.n_systems, seed=args.seed, progress=_say,
                         overwrite=args.overwrite, fmt=args.format)
    for split, path in paths.items():
        _say(f"{split}: {path}")
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    from fairchem_categorical.data import convert

    n = convert(args.inputs, args.out, overwrite=args.overwrite, fmt=args.format)
    _say(f"wrote {n} structures to {args.out}")
    return 0


# -- fit-bins ------------------------------------------------------------------------------
def cmd_fit_bins(args: argparse.Namespace) -> int:
    from fairchem_categorical.binsfile import count_clipped, fit_bins_files, write_bins
    from fairchem_categorical.histogram import HistogramSupport

    fit = fit_bins_files(args.data, num_bins=args.num_bins, level=args.level,
                         margin=args.margin, sigma_ratio=args.sigma_ratio, progress=_say)
    lo, hi = fit.target_range
    s = fit.support
    _say(f"{fit.num_structures} structures; {args.level} targets span [{lo:.4f}, {hi:.4f}] "
         f"(normalised; per-atom mean {fit.energy.mean:.5f} eV, std {fit.energy.std:.5f} eV)")
    _say(f"energy support: [{s.low:.4f}, {s.high:.4f}], {s.num_bins} bins of "
         f"{s.width:.4f} ({s.width * fit.energy.std:.5f} eV"
         f"{'/atom' if args.level == 'per_atom' else ''}); "
         f"force support: [0, {fit.force_support.high:.3f}] eV/A (max |F| {fit.force_max:.3f})")
    for path in args.check or []:
        clipped, n = count_clipped([path], fit.energy, HistogramSupport.from_spec(s))
        _say(f"{path}: {clipped} of {n} targets fall outside the support and would be clipped")
    out = write_bins(fit, args.out, args.data)
    _say(f"wrote {out}")
    return 0


# -- train ---------------------------------------------------------------------------------
def _final_checkpoint(run_dir: Path, timestamp_id: str) -> Path:
    return run_dir / timestamp_id / "checkpoints" / "final" / "inference_ckpt.pt"


def _check_data(path: str, flag: str) -> str:
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{flag} {path}: no such file or folder")
    return str(p.resolve())


def config_line(config: Path) -> int:
    """Which fairchem line a config is for: 1 (OCP trainer YAML) or 2 (Hydra ``fairchem -c``)."""
    import yaml

    try:
        top = yaml.safe_load(config.read_text()) or {}
    except yaml.YAMLError as err:
        raise ValueError(f"{config}: not valid YAML ({err})") from err
    if not isinstance(top, dict):
        raise ValueError(f"{config}: expected a mapping at the top level")
    if top.keys() & {"trainer", "optim", "includes", "loss_functions"}:
        return 1
    if top.keys() & {"defaults", "runner", "job"}:
        return 2
    raise ValueError(f"{config}: neither a fairchem 1.10 (trainer/optim/includes) nor a "
                     "fairchem 2.x (defaults/runner/job) config")


def installed_line() -> int | None:
    """Major version of the fairchem-core in this environment (1 or 2), or None."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return int(version("fairchem-core").split(".")[0])
    except PackageNotFoundError:
        return None


def _require_line(line: int, what: str) -> None:
    found = installed_line()
    if found != line:
        venv = ".venv-fairchem1" if line == 1 else ".venv"
        raise RuntimeError(
            f"{what} needs fairchem-core {'1.10' if line == 1 else '2.x'}, but this environment "
            f"has {'no fairchem-core' if found is None else f'fairchem-core {found}.x'}; "
            f"run it with {venv}/bin/fairchem-categorical (see the README)")


def train(config: str | Path, train_data: str | None = None, val_data: str | None = None,
          bins: str | Path | None = None, max_epochs: int | None = None,
          seed: int | None = None, run_dir: str | Path | None = None,
          overrides: list[str] | None = None, quiet: bool = False) -> Path:
    """Train through fairchem's own entry point; returns the final checkpoint.

    fairchem 2.x configs run as ``fairchem -c CONFIG`` (Hydra overrides), fairchem 1.10
    configs as ``fairchem --mode train --config-yml CONFIG`` (``--a.b=c`` overrides).
    """
    config = Path(config).resolve()
    if not config.is_file():
        raise FileNotFoundError(f"config not found: {config}")
    line = config_line(config)
    _require_line(line, f"{config.name} (a fairchem {'1.10' if line == 1 else '2.x'} config)")
    run_dir = Path(run_dir or f"runs/fairchem{line}").resolve()
    timestamp_id = time.strftime("%Y%m%d-%H%M%S")
    train_data = _check_data(train_data, "--train-data") if train_data else None
    val_data = _check_data(val_data, "--val-data") if val_data else None
    if line == 1:
        from fairchem_categorical.fairchem1.train import run

        return run(config, run_dir, timestamp_id, train_data, val_data, bins, max_epochs, seed,
                   list(overrides or []), None if quiet else _say)
    # A private copy of the config folder, so a bins file from anywhere becomes
    # the `bins` group entry Hydra composes (and the run records what it used).
    config_dir = run_dir / timestamp_id / "config"
    shutil.copytree(config.parent, config_dir)
    args = [f"job.run_dir={run_dir}", f"+job.timestamp_id={timestamp_id}"]
    if bins is not None:
        from fairchem_categorical.binsfile import read_bins

        read_bins(bins)  # clear error before fairchem starts
        shutil.copy(bins, config_dir / "bins" / "from_cli.yaml")
        args.append("bins=from_cli")
    if train_data:
        args.append(f"train_data={train_data}")
    if val_data:
        args.append(f"val_data={val_data}")
    if max_epochs is not None:
        args.append(f"max_epochs={max_epochs}")
    if seed is not None:
        args.append(f"seed={seed}")
    args.extend(overrides or [])
    cmd = [sys.executable, "-c", "from fairchem.core._cli import main; main()",
           "-c", str(config_dir / config.name), *args]
    log = run_dir / timestamp_id / "train.log"
    if not quiet:
        _say(f"training {config.name} -> {run_dir / timestamp_id} (log: {log})")
    code = run_logged(cmd, log, None if quiet else _say)
    final = _final_checkpoint(run_dir, timestamp_id)
    check_trained(code, final, log)
    return final


def run_logged(cmd: list[str], log: Path, say: Callable[[str], None] | None = None) -> int:
    """Run fairchem's CLI, its whole output to ``log``, progress lines to ``say``."""
    with log.open("w") as fh:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert proc.stdout is not None
        for line in proc.stdout:
            fh.write(line)
            if say is not None and _is_progress(line):
                say("  " + progress_text(line))
        return proc.wait()


def check_trained(code: int, final: Path, log: Path) -> None:
    """A clear error with the log's tail when fairchem failed or wrote no checkpoint."""
    if code != 0 or not final.is_file():
        tail = "".join(log.read_text().splitlines(keepends=True)[-25:])
        raise RuntimeError(f"fairchem training failed (exit {code}); last lines of {log}:\n{tail}")


def progress_text(line: str) -> str:
    """A fairchem log line without its timestamp and source-path prefix."""
    return line.strip().split("(INFO): ", 1)[-1][:200]


def _is_progress(line: str) -> bool:
    keys = ("train/loss", "val/loss", ",mae:", "Started train epoch", "Training Completed",
            "Error", "error:", "energy_mae:")
    return any(k in line for k in keys)


def cmd_train(args: argparse.Namespace) -> int:
    final = train(args.config, args.train_data, args.val_data, args.bins, args.max_epochs,
                  args.seed, args.run_dir, args.overrides)
    _say(str(final))
    return 0


# -- predict -------------------------------------------------------------------------------
def predict_files(checkpoint: str | Path, paths, **kwargs):
    """Predict the structures of data files with the installed fairchem line's model.

    A checkpoint loads only in its own line's environment (fairchem 1.10 and 2.x pickle
    different classes), so the line is the installed one.
    """
    import logging

    from fairchem_categorical.data import read_frames

    line = installed_line()
    if line == 1:
        from fairchem_categorical.fairchem1.predict import predict_atoms
    elif line == 2:
        from fairchem_categorical.fairchem2.predict import predict_atoms
    else:
        raise RuntimeError("predict needs fairchem-core (1.10 in .venv-fairchem1, 2.x in .venv)")
    frames = read_frames(paths, require_labels=False)
    logging.info("predicting %d structures from %s", len(frames), [str(p) for p in paths])
    return predict_atoms(checkpoint, frames, **kwargs)


def cmd_predict(args: argparse.Namespace) -> int:
    from fairchem_categorical.predictions import write_predictions

    preds = predict_files(args.checkpoint, args.data, batch_size=args.batch_size,
                          device=args.device, progress=_say)
    csv_path, npz_path = write_predictions(preds, args.out)
    _say(f"wrote {csv_path} ({len(preds)} structures) and {npz_path}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from fairchem_categorical.evaluation import evaluate_files, format_metrics

    predictions, ood = args.predictions, args.ood_predictions
    if args.checkpoint:
        from fairchem_categorical.predictions import write_predictions

        if not args.data:
            raise ValueError("--checkpoint needs --data (and optionally --ood-data)")
        out = Path(args.out)
        predictions, _ = write_predictions(
            predict_files(args.checkpoint, args.data, progress=_say), out / "predictions.csv")
        if args.ood_data:
            ood, _ = write_predictions(predict_files(args.checkpoint, args.ood_data),
                                       out / "ood_predictions.csv")
    if not predictions:
        raise ValueError("give --predictions CSV, or --checkpoint with --data")
    metrics = evaluate_files(predictions, args.out, npz=args.npz, ood_predictions=ood)
    _say(format_metrics(metrics))
    _say(f"wrote {Path(args.out) / 'metrics.json'} and plots in {args.out}")
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    _require_line(2, "calibrate")
    from fairchem_categorical.fairchem2.calibrate import fit_from_predictions, write_temperature
    from fairchem_categorical.uncertainty import evaluate_predictions

    def score(ckpt: str) -> dict[str, float]:
        preds = predict_files(ckpt, args.val)
        cols = {k: np.array([getattr(p, k) for p in preds], dtype=float)
                for k in ("energy", "energy_std", "energy_target", "natoms")}
        arrays = {"energy_probs": np.stack([p.energy_probs for p in preds]),
                  "energy_bin_centers": np.stack([p.energy_bin_centers for p in preds])}
        return preds, evaluate_predictions(cols, arrays)

    preds, before = score(args.checkpoint)
    factor = fit_from_predictions(preds)
    temperature = write_temperature(args.checkpoint, args.out, factor)
    _, after = score(args.out)
    _say(f"temperature {temperature:.4f} (x{factor:.4f} on the checkpoint's)")
    for key in ("energy_nll", "miscalibration_area", "energy_mae"):
        _say(f"{key}: {before.get(key, float('nan')):.4f} -> {after.get(key, float('nan')):.4f}")
    _say(str(Path(args.out)))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from fairchem_categorical.demo import run_demo

    run_demo(Path(args.out), max_epochs=args.max_epochs, n_systems=args.n_systems,
             seed=args.seed)
    return 0


# -- parser --------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fairchem-categorical", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    # the dataset formats of fairchem_categorical.data.FORMATS (not imported here: slow)
    fmt_kw = dict(choices=("aselmdb", "pyg-lmdb"), default="aselmdb",
                  help="aselmdb: ASE-LMDB for fairchem-core 2.x (default); pyg-lmdb: pickled "
                       "torch-geometric LMDB for fairchem-core 1.10 (needs .venv-fairchem1)")
    s = sub.add_parser("make-dataset", help="generate the embedded EMT adsorbate+slab data",
                       description="Generate EMT-labelled adsorbate+slab frames and write "
                                   "train/val/test dataset folders (with metadata.npz).")
    s.add_argument("--out", required=True, help="output folder")
    s.add_argument("--n-systems", type=int, default=24)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--overwrite", action="store_true")
    s.add_argument("--format", **fmt_kw)
    s.set_defaults(func=cmd_make_dataset)

    s = sub.add_parser("convert", help="ASE-readable files with energies+forces -> LMDB dataset",
                       description="Convert extxyz / traj / ASE db / LMDB files to an ASE-LMDB "
                                   "(fairchem 2.x) or pyg-lmdb (fairchem 1.10) dataset.")
    s.add_argument("inputs", nargs="+")
    s.add_argument("--out", required=True,
                   help="output file (.aselmdb, or .lmdb with --format pyg-lmdb) or folder "
                        "(written as FOLDER/data.aselmdb or FOLDER/data.lmdb); metadata.npz "
                        "lands beside it")
    s.add_argument("--overwrite", action="store_true")
    s.add_argument("--format", **fmt_kw)
    s.set_defaults(func=cmd_convert)

    s = sub.add_parser("fit-bins", help="propose the histogram support from training data",
                       description="Stream the data, fit element references and normalisation "
                                   "as the configs apply them, and write the bins YAML.")
    s.add_argument("data", nargs="+", help="training data (ASE-LMDB or any ASE-readable file)")
    s.add_argument("--num-bins", type=int, default=128)
    s.add_argument("--level", choices=("per_atom", "total"), default="per_atom")
    s.add_argument("--margin", type=float, default=0.25,
                   help="widen the support by this fraction of the observed range per side")
    s.add_argument("--sigma-ratio", type=float, default=0.75)
    s.add_argument("--check", nargs="*", help="report how many targets of these files clip")
    s.add_argument("--out", required=True)
    s.set_defaults(func=cmd_fit_bins)

    s = sub.add_parser("train", help="train with fairchem's own entry point",
                       description="Runs `fairchem -c CONFIG` (fairchem 2.x configs) or "
                                   "`fairchem --mode train --config-yml CONFIG` (1.10 configs) "
                                   "with the plugin's heads; extra arguments are passed to "
                                   "fairchem as overrides. Last line: final checkpoint.")
    s.add_argument("config")
    s.add_argument("--train-data")
    s.add_argument("--val-data")
    s.add_argument("--bins", help="bins YAML written by fit-bins")
    s.add_argument("--max-epochs", type=int)
    s.add_argument("--seed", type=int)
    s.add_argument("--run-dir", help="default: runs/fairchem1 or runs/fairchem2")
    s.add_argument("overrides", nargs="*",
                   help="fairchem overrides: Hydra's lr=1e-3 (2.x), --optim.lr_initial=1e-3 (1.10)")
    s.set_defaults(func=cmd_train)

    s = sub.add_parser("predict", help="energies, forces and uncertainties to CSV + NPZ",
                       description="One CSV row per structure; per-atom arrays in an NPZ.")
    s.add_argument("--checkpoint", required=True)
    s.add_argument("data", nargs="+")
    s.add_argument("--out", required=True, help="CSV path; the NPZ goes beside it")
    s.add_argument("--batch-size", type=int, default=8)
    s.add_argument("--device", default="cpu")
    s.set_defaults(func=cmd_predict)

    s = sub.add_parser("evaluate", help="accuracy, ranking, calibration and OOD metrics + plots",
                       description="metrics.json, a printed table and PNG plots from predict's "
                                   "CSV/NPZ (or straight from a checkpoint and data).")
    s.add_argument("--predictions", help="CSV written by predict (its .npz beside it)")
    s.add_argument("--npz", help="the NPZ, if not beside the CSV")
    s.add_argument("--ood-predictions", help="predictions on out-of-distribution data")
    s.add_argument("--checkpoint", help="predict first with this checkpoint")
    s.add_argument("--data", nargs="*", help="with --checkpoint: in-distribution data")
    s.add_argument("--ood-data", nargs="*", help="with --checkpoint: out-of-distribution data")
    s.add_argument("--out", required=True, help="output folder")
    s.set_defaults(func=cmd_evaluate)

    s = sub.add_parser("calibrate", help="fit a temperature on validation data",
                       description="Fit the temperature that minimises the NLL of validation "
                                   "targets and store it in a copy of the checkpoint; predict "
                                   "applies it.")
    s.add_argument("--checkpoint", required=True)
    s.add_argument("--val", nargs="+", required=True, help="validation data")
    s.add_argument("--out", required=True, help="the calibrated checkpoint to write")
    s.set_defaults(func=cmd_calibrate)

    s = sub.add_parser("demo", help="the main job on the embedded data",
                       description="Make data, fit bins, train categorical and scalar eSEN, "
                                   "predict, print the comparison table, plot distributions.")
    s.add_argument("--out", default="demo_out")
    s.add_argument("--max-epochs", type=int, default=None)
    s.add_argument("--n-systems", type=int, default=24)
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    args, unknown = build_parser().parse_known_args(argv)
    if unknown:
        if args.command != "train":
            build_parser().error(f"unrecognized arguments: {' '.join(unknown)}")
        args.overrides = [*args.overrides, *unknown]
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, FileExistsError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
