"""Which fairchem line a config belongs to, and how fit-bins results reach 1.10 configs.

Plain YAML checks: these run in both environments, with or without fairchem.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from fairchem_categorical.binsfile import apply_bins
from fairchem_categorical.cli import config_line, installed_line, train
from tests.conftest import REPO

F1, F2 = REPO / "configs" / "fairchem1", REPO / "configs" / "fairchem2"
TOP_LEVEL_F2 = sorted(F2.glob("*.yaml"))
TOP_LEVEL_F1 = sorted(F1.glob("*.yml"))


@pytest.mark.parametrize("path", TOP_LEVEL_F1 + TOP_LEVEL_F2, ids=lambda p: p.name)
def test_shipped_configs_are_told_apart(path: Path) -> None:
    assert config_line(path) == (1 if path.parent == F1 else 2)


def test_unknown_config_is_an_error_naming_the_file(tmp_path) -> None:
    bad = tmp_path / "x.yml"
    bad.write_text("model: {name: hydra}\n")
    with pytest.raises(ValueError, match="x.yml"):
        config_line(bad)
    bad.write_text("- a list\n")
    with pytest.raises(ValueError, match="mapping"):
        config_line(bad)


def test_config_of_the_other_line_is_refused_before_training(tmp_path) -> None:
    other = {2: F1 / "equiformer_v2_categorical.yml", 1: F2 / "esen_scalar_conserving.yaml",
             None: F1 / "equiformer_v2_categorical.yml"}[installed_line()]
    venv = ".venv-fairchem1" if other.parent == F1 else ".venv"
    with pytest.raises(RuntimeError, match=venv):
        train(other, run_dir=tmp_path)
    assert not any(tmp_path.iterdir())  # nothing started


def _bins(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


@pytest.mark.parametrize("name", ["equiformer_v2_categorical.yml",
                                  "esen_categorical_conserving.yml"])
def test_shipped_1_10_bins_are_the_embedded_fit(name: str) -> None:
    """The anchored bins in the 1.10 configs are the same fit as the 2.x bins group."""
    cfg = _bins(F1 / name)
    embedded = _bins(F2 / "bins" / "embedded.yaml")
    head = cfg["model"]["heads"]["energy"]
    assert head["energy"] == embedded["energy"] and head["support"] == embedded["support"]
    cat = cfg["dataset"]["train"]["categorical"]
    assert cat["energy"] == embedded["energy"] and cat["support"] == embedded["support"]
    if "forces" in cfg["model"]["heads"]:
        assert cfg["model"]["heads"]["forces"]["force_support"] == embedded["force_support"]
        assert cfg["model"]["heads"]["forces"]["prior_mean"] == embedded["stats"]["force_mean"]


def test_apply_bins_reaches_every_categorical_head_and_binned_dataset() -> None:
    cfg = _bins(F1 / "equiformer_v2_categorical.yml")
    new = _bins(F2 / "bins" / "embedded.yaml")
    new["support"] = {**new["support"], "num_bins": 64, "low": -3.0}
    new["energy"] = {**new["energy"], "std": 0.5}
    new["force_support"] = {**new["force_support"], "high": 9.0}
    new["stats"] = {**new["stats"], "force_mean": 0.7}
    where = apply_bins(cfg, new)
    assert where == ["model.heads.energy", "model.heads.forces", "dataset.train.categorical"]
    heads, cat = cfg["model"]["heads"], cfg["dataset"]["train"]["categorical"]
    assert heads["energy"]["support"]["num_bins"] == cat["support"]["num_bins"] == 64
    assert heads["energy"]["energy"]["std"] == cat["energy"]["std"] == 0.5
    assert heads["forces"]["force_support"]["high"] == cat["force_support"]["high"] == 9.0
    assert heads["forces"]["prior_mean"] == 0.7


def test_apply_bins_to_a_scalar_config_is_an_error() -> None:
    with pytest.raises(ValueError, match="no categorical heads"):
        apply_bins(_bins(F1 / "equiformer_v2_scalar.yml"), _bins(F2 / "bins" / "embedded.yaml"))
