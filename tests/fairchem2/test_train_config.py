"""What ``train`` copies into a fairchem 2.x run folder: the config and what it composes."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from fairchem_categorical.fairchem2.train import composed_paths, copy_config
from tests.conftest import CONFIGS


def test_copies_only_the_composed_files_and_groups(tmp_path: Path) -> None:
    names = {p.relative_to(CONFIGS).as_posix()
             for p in composed_paths(CONFIGS / "esen_categorical_conserving.yaml")}
    assert names == {"esen_categorical_conserving.yaml", "base_train.yaml", "backbone",
                     "bins", "tasks"}
    copied = copy_config(CONFIGS / "esen_scalar_conserving.yaml", tmp_path / "cfg")
    assert copied == tmp_path / "cfg" / "esen_scalar_conserving.yaml"
    assert sorted(p.name for p in (tmp_path / "cfg").iterdir()) == [
        "backbone", "base_train.yaml", "bins", "esen_scalar_conserving.yaml", "tasks"]
    assert (tmp_path / "cfg" / "tasks" / "scalar.yaml").is_file()


def test_run_folder_inside_the_config_folder_is_not_copied(tmp_path: Path) -> None:
    """The config's whole folder used to be copied: with the run folder inside it, copytree
    recursed until RecursionError, and from a working directory it copied .venv too."""
    folder = tmp_path / "work"
    shutil.copytree(CONFIGS, folder)
    (folder / ".venv" / "lib").mkdir(parents=True)
    (folder / ".venv" / "lib" / "big.bin").write_bytes(b"x" * 1000)
    run_dir = folder / "runs" / "20260101" / "config"
    copied = copy_config(folder / "esen_categorical_direct.yaml", run_dir)
    assert copied.is_file()
    assert not (run_dir / ".venv").exists() and not (run_dir / "runs").exists()
    defaults = yaml.safe_load(copied.read_text())["defaults"]
    assert "base_train" in defaults


def test_train_on_slurm_returns_the_future_checkpoint(tmp_path, monkeypatch) -> None:
    """With job.scheduler.mode=SLURM fairchem submits and returns: train reports where the
    final checkpoint will appear instead of failing because it is not there yet."""
    from fairchem_categorical.fairchem2 import train as train2

    calls = []

    def fake_fairchem(cmd, log, say, env=None):
        calls.append(cmd)
        log.write_text("submitted\n")
        return 0

    monkeypatch.setattr(train2, "run_logged", fake_fairchem)
    config = CONFIGS / "esen_categorical_conserving.yaml"
    ckpt = train2.run(config, tmp_path, "t1", "tr", "va", None, 1, None,
                      ["job.scheduler.mode=SLURM", "job.scheduler.num_nodes=2"], None)
    assert ckpt == tmp_path / "t1" / "checkpoints" / "final" / "inference_ckpt.pt"
    assert "job.scheduler.mode=SLURM" in calls[0] and not ckpt.exists()
    with pytest.raises(RuntimeError, match="fairchem training failed"):
        train2.run(config, tmp_path, "t2", "tr", "va", None, 1, None, [], None)


@pytest.mark.parametrize(("device", "device_type", "env"), [
    ("cpu", "CPU", {}), ("cuda", "CUDA", {}), ("cuda:1", "CUDA", {"CUDA_VISIBLE_DEVICES": "1"})])
def test_train_device_sets_fairchems_device_type(device, device_type, env, tmp_path,
                                                 monkeypatch) -> None:
    """``train --device cuda:1``: fairchem 2.x takes CPU or CUDA (local rank 0's GPU), so
    the child process sees GPU 1 alone."""
    import torch

    from fairchem_categorical.fairchem2 import train as train2

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    calls = []

    def fake_fairchem(cmd, log, say, env=None):
        calls.append((cmd, env))
        return 1

    monkeypatch.setattr(train2, "run_logged", fake_fairchem)
    log = tmp_path / "t" / "train.log"
    log.parent.mkdir(parents=True)
    log.write_text("")
    with pytest.raises(RuntimeError, match="fairchem training failed"):
        train2.run(CONFIGS / "esen_categorical_conserving.yaml", tmp_path, "t", "tr", "va",
                   None, 1, None, ["lr=1e-3"], None, device=device)
    cmd, child_env = calls[0]
    assert f"job.device_type={device_type}" in cmd
    assert cmd.index(f"job.device_type={device_type}") < cmd.index("lr=1e-3")  # yours win
    assert child_env == env


@pytest.mark.parametrize("member", ["categorical", "scalar"])
def test_active_learning_finetune_configs_pass_fairchems_unused_key_check(member, tmp_path):
    """Every later active-learning round fine-tunes through esen_categorical_finetune.yaml;
    ``fairchem -c`` refuses a config with unused top-level keys, which the scalar ensemble
    members' overrides once left (ce_coefficient), so their round 1 never started."""
    from fairchem.core._cli import get_canonical_config, get_hydra_config_from_yaml

    from fairchem_categorical.app.active import FINETUNE_CONFIG, SCALAR_FINETUNE_OVERRIDES

    extra = list(SCALAR_FINETUNE_OVERRIDES) if member == "scalar" else []
    cfg = get_hydra_config_from_yaml(str(CONFIGS / FINETUNE_CONFIG), [
        f"job.run_dir={tmp_path}", "+job.timestamp_id=t", "train_data=unused",
        "val_data=unused", "starting_checkpoint=unused.pt", "model.heads=null", *extra])
    tasks = get_canonical_config(cfg).runner.train_eval_unit.tasks
    names = [t.name for t in tasks]
    assert names == (["energy", "forces"] if member == "scalar" else
                     ["energy_categorical", "energy", "forces"])
