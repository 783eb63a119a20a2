"""``fairchem-categorical train`` for fairchem-core 1.10 configs: fairchem's own OCP trainer.

The config (with its ``includes``) is resolved by fairchem's ``load_config``,
the data folders and bins are filled in, and the result is written into the
run folder and run with ``fairchem --mode train``. The run folder keeps the
exact config that trained the model.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from fairchem_categorical.binsfile import apply_bins


def resolve_config(config: Path, train_data: str | None, val_data: str | None,
                   bins: str | Path | None, max_epochs: int | None) -> dict[str, Any]:
    from fairchem.core.common.utils import load_config

    cfg, _, duplicates = load_config(str(config))
    if duplicates:
        raise ValueError(f"{config}: conflicting keys in its includes: {duplicates}")
    if bins is not None:
        from fairchem_categorical.binsfile import read_bins

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
        seed: int | None, overrides: list[str], say: Callable[[str], None] | None) -> Path:
    """Train; returns the last checkpoint (``checkpoint.pt``, with its EMA weights)."""
    import torch

    from fairchem_categorical.cli import check_trained, run_logged

    cfg = resolve_config(config, train_data, val_data, bins, max_epochs)
    run_dir.mkdir(parents=True, exist_ok=True)
    resolved = run_dir / f"{timestamp_id}.yml"
    resolved.write_text(yaml.safe_dump(cfg, sort_keys=False))
    cmd = [sys.executable, "-c", "from fairchem.core._cli import main; main()",
           "--mode", "train", "--config-yml", str(resolved), "--run-dir", str(run_dir),
           "--timestamp-id", timestamp_id, "--identifier", config.stem]
    if seed is not None:
        cmd += ["--seed", str(seed)]
    if not torch.cuda.is_available():
        cmd.append("--cpu")  # without it fairchem 1.10 asks for an NCCL process group
    cmd += overrides
    log = run_dir / f"{timestamp_id}.log"
    if say:
        say(f"training {config.name} -> {run_dir} (log: {log})")
    final = final_checkpoint(run_dir, timestamp_id)
    check_trained(run_logged(cmd, log, say), final, log)
    return final
