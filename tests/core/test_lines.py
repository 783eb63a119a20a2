"""Which fairchem line a config belongs to (app/lines.py): plain YAML checks that run in
both environments, with or without fairchem."""

from __future__ import annotations

from pathlib import Path

import pytest

from fairchem_categorical.app.jobs import train
from fairchem_categorical.app.lines import config_line, installed_line
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


def test_inference_settings_on_the_1_10_line_say_what_it_offers(monkeypatch, tmp_path) -> None:
    """--inference-settings is a fairchem 2.x option; on 1.10 it is refused before any
    data or checkpoint is read, with what 1.10 has instead."""
    from fairchem_categorical.app import jobs, lines

    monkeypatch.setattr(lines, "installed_line", lambda: 1)
    with pytest.raises(ValueError, match="--inference-settings batch: fairchem-core 1.10 has "
                                         "no inference-settings presets.*amp"):
        jobs.predict_files(tmp_path / "missing.pt", [tmp_path / "missing"],
                           inference_settings="batch")
