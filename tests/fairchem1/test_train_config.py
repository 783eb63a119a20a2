"""How a fit-bins result reaches fairchem 1.10 configs (fairchem1/train.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from fairchem_categorical.fairchem1.train import apply_bins
from tests.conftest import REPO

F1, F2 = REPO / "configs" / "fairchem1", REPO / "configs" / "fairchem2"


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
