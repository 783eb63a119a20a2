"""``fairchem-categorical train`` for fairchem-core 1.10 configs: fairchem's own OCP trainer.

The config (with its ``includes``) is resolved by fairchem's ``load_config``,
the data folders and bins are filled in, and the result is written into the
run folder and run with ``fairchem --mode train``. The run folder keeps the
exact config that trained the model.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from fairchem_categorical import clipping
from fairchem_categorical.bins import read_bins
from fairchem_categorical.devices import cuda_visible
from fairchem_categorical.runs import FAIRCHEM_CLI, check_trained, run_logged

ENERGY_HEADS = ("CategoricalEnergyHead", "categorical_energy_head")
FORCE_HEADS = ("CategoricalDirectForceHead", "categorical_direct_force_head")


def _is(module: str, names: tuple[str, ...]) -> bool:
    return module.rsplit(".", 1)[-1] in names


def apply_bins(config: dict[str, Any], bins: dict[str, Any]) -> list[str]:
    """Put a fit-bins result into an OCP-trainer config; returns where it went.

    Every categorical head and every dataset with a ``categorical`` block gets it, so the
    heads and the binned targets cannot disagree.
    """
    changed = []
    for name, head in (config.get("model", {}).get("heads") or {}).items():
        module = str(head.get("module", ""))
        if _is(module, ENERGY_HEADS):
            head["support"], head["energy"] = bins["support"], bins["energy"]
            changed.append(f"model.heads.{name}")
        elif _is(module, FORCE_HEADS):
            head["force_support"] = bins["force_support"]
            head["prior_mean"] = bins.get("stats", {}).get("force_mean", head.get("prior_mean"))
            changed.append(f"model.heads.{name}")
    for split, ds in (config.get("dataset") or {}).items():
        if isinstance(ds, dict) and isinstance(ds.get("categorical"), dict):
            cat = ds["categorical"]
            cat["energy"], cat["support"] = bins["energy"], bins["support"]
            if "force_support" in cat:
                cat["force_support"] = bins["force_support"]
            changed.append(f"dataset.{split}.categorical")
    if "categorical_bins" in config:
        config["categorical_bins"] = bins
    if not changed:
        raise ValueError("--bins given, but the config has no categorical heads or binned dataset")
    return changed


def resolve_config(config: Path, train_data: str | None, val_data: str | None,
                   bins: str | Path | None, max_epochs: int | None) -> dict[str, Any]:
    from fairchem.core.common.utils import load_config

    cfg, _, duplicates = load_config(str(config))
    if duplicates:
        raise ValueError(f"{config}: conflicting keys in its includes: {duplicates}")
    if bins is not None:
        apply_bins(cfg, read_bins(bins))
    dataset = cfg.setdefault("dataset", {})
    if train_data:
        dataset.setdefault("train", {})["src"] = train_data
    if val_data:
        dataset.setdefault("val", {})["src"] = val_data
    if max_epochs is not None:
        cfg.setdefault("optim", {})["max_epochs"] = max_epochs
    for split in ("train", "val"):
        src = (dataset.get(split) or {}).get("src")
        if src is not None and not Path(src).exists():
            raise FileNotFoundError(
                f"dataset.{split}.src {src}: no such folder (make one with `fairchem-categorical "
                "make-dataset --format pyg-lmdb` or pass --train-data/--val-data)")
    return cfg


def final_checkpoint(run_dir: Path, timestamp_id: str) -> Path:
    return run_dir / "checkpoints" / timestamp_id / "checkpoint.pt"


def run(config: Path, run_dir: Path, timestamp_id: str, train_data: str | None,
        val_data: str | None, bins: str | Path | None, max_epochs: int | None,
        seed: int | None, overrides: list[str], say: Callable[[str], None] | None,
        device: str | None = None) -> Path:
    """Train; returns the last checkpoint (``checkpoint.pt``, with its EMA weights).

    ``device`` (cpu, cuda, cuda:N; None: CUDA when there is a GPU) decides fairchem's
    ``--cpu``; ``cuda:N`` shows fairchem GPU N alone (``CUDA_VISIBLE_DEVICES``).
    """
    import torch

    cfg = resolve_config(config, train_data, val_data, bins, max_epochs)
    run_dir.mkdir(parents=True, exist_ok=True)
    resolved = run_dir / f"{timestamp_id}.yml"
    resolved.write_text(yaml.safe_dump(cfg, sort_keys=False))
    cmd = [*FAIRCHEM_CLI, "--mode", "train", "--config-yml", str(resolved),
           "--run-dir", str(run_dir), "--timestamp-id", timestamp_id, "--identifier", config.stem]
    if seed is not None:
        cmd += ["--seed", str(seed)]
    if device == "cpu" or not torch.cuda.is_available():
        cmd.append("--cpu")  # without it fairchem 1.10 asks for an NCCL process group
    env = cuda_visible(device) if device is not None else {}
    cmd += overrides
    log = run_dir / f"{timestamp_id}.log"
    if say:
        say(f"training {config.name} -> {run_dir} (log: {log})")
    final = check_trained(run_logged(cmd, log, say, env), final_checkpoint(run_dir, timestamp_id),
                          log)
    clipping.report(final.parent, say)  # written by CategoricalTrainer beside the checkpoint
    return final
