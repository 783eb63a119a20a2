"""``train`` for fairchem-core 2.x configs: fairchem's own ``fairchem -c CONFIG`` (Hydra).

The run folder gets a private copy of the config and the files and group folders its
``defaults`` compose (nothing else: not the working directory, not the run folder
itself), with a bins file from anywhere dropped in as the ``bins`` group entry, so the
run records exactly what trained it.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from fairchem_categorical import clipping
from fairchem_categorical.bins import read_bins
from fairchem_categorical.devices import cuda_visible
from fairchem_categorical.runs import FAIRCHEM_CLI, check_trained, run_logged

BINS_GROUP = "bins"
FROM_CLI = "from_cli"


def _defaults(config: Path) -> list[Any]:
    top = yaml.safe_load(config.read_text()) or {}
    return list(top.get("defaults") or []) if isinstance(top, dict) else []


def composed_paths(config: Path) -> list[Path]:
    """The config, the primary files its ``defaults`` include and the group folders it uses.

    A group (``- backbone: esen_small``) is copied whole, so a command-line override may pick
    another entry of it; ``bins`` is always copied (the CLI writes its entry there).
    """
    root = config.parent
    paths, seen, todo = [config], {config}, [config]
    while todo:
        for entry in _defaults(todo.pop()):
            if isinstance(entry, str) and entry != "_self_":
                target = root / f"{entry.removeprefix('override ')}.yaml"
            elif isinstance(entry, dict) and entry:
                group = next(iter(entry)).split()[-1].split("@")[0]
                target = root / group
            else:
                continue
            if target.exists() and target not in seen:
                seen.add(target)
                paths.append(target)
                if target.is_file():
                    todo.append(target)
    if (root / BINS_GROUP).is_dir() and root / BINS_GROUP not in seen:
        paths.append(root / BINS_GROUP)
    return paths


def copy_config(config: Path, dest: Path) -> Path:
    """Copy what ``config`` composes into ``dest``; returns the copied config file."""
    dest.mkdir(parents=True, exist_ok=True)
    for path in composed_paths(config):
        target = dest / path.relative_to(config.parent)
        if path.is_dir():
            shutil.copytree(path, target, dirs_exist_ok=True)
        else:
            shutil.copy2(path, target)
    return dest / config.name


def final_checkpoint(run_dir: Path, timestamp_id: str) -> Path:
    return run_dir / timestamp_id / "checkpoints" / "final" / "inference_ckpt.pt"


def run(config: Path, run_dir: Path, timestamp_id: str, train_data: str | None,
        val_data: str | None, bins: str | Path | None, max_epochs: int | None,
        seed: int | None, overrides: list[str], say: Callable[[str], None] | None,
        device: str | None = None) -> Path:
    """Train with ``fairchem -c``; returns the final inference checkpoint.

    ``device`` (cpu, cuda, cuda:N; None: the config's ``job.device_type``) sets
    ``job.device_type``; ``cuda:N`` shows fairchem GPU N alone (``CUDA_VISIBLE_DEVICES``).
    """
    config_dir = run_dir / timestamp_id / "config"
    copied = copy_config(config, config_dir)
    args = [f"job.run_dir={run_dir}", f"+job.timestamp_id={timestamp_id}"]
    if bins is not None:
        read_bins(bins)  # a clear error before fairchem starts
        (config_dir / BINS_GROUP).mkdir(exist_ok=True)
        shutil.copy(bins, config_dir / BINS_GROUP / f"{FROM_CLI}.yaml")
        args.append(f"{BINS_GROUP}={FROM_CLI}")
    if train_data:
        args.append(f"train_data={train_data}")
    if val_data:
        args.append(f"val_data={val_data}")
    if max_epochs is not None:
        args.append(f"max_epochs={max_epochs}")
    if seed is not None:
        args.append(f"seed={seed}")
    env = {}
    if device is not None:
        args.append(f"job.device_type={'CPU' if device == 'cpu' else 'CUDA'}")
        env = cuda_visible(device)
    args.extend(overrides)
    log = run_dir / timestamp_id / "train.log"
    if say:
        say(f"training {config.name} -> {run_dir / timestamp_id} (log: {log})")
    code = run_logged([*FAIRCHEM_CLI, "-c", str(copied), *args], log, say, env)
    final = final_checkpoint(run_dir, timestamp_id)
    if code == 0 and submitted_to_slurm(overrides):
        if say:
            say(f"submitted to SLURM by fairchem (log: {log}); the final checkpoint will be")
        return final
    check_trained(code, final, log)
    clipping.report(run_dir / timestamp_id, say)  # written by OutOfSupportCallback
    return final


def submitted_to_slurm(overrides: list[str]) -> bool:
    """``job.scheduler.mode=SLURM``: fairchem submits the run and returns at once."""
    modes = [o.split("=", 1)[1] for o in overrides if o.lstrip("+").startswith(
        "job.scheduler.mode=")]
    return bool(modes) and modes[-1].strip().upper() == "SLURM"
