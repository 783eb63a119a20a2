"""Fine-tuning cannot silently mismatch: the heads must decode as this run's bins encode.

A fine-tune with ``model.heads=null`` keeps the checkpoint's heads (their support and
energy transform) while the dataset, the losses and the energy task's element references
come from the run's bins. ``BinsMatchCallback`` compares them at the start of training.
Here the model comes from one composition of a shipped config and the tasks from another
with other bins, as such a fine-tune puts them together.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from fairchem_categorical.fairchem2.callbacks import BinsMatchCallback
from fairchem_categorical.readout import HeadsMismatchError
from tests.conftest import CONFIGS
from tests.fairchem2.checkpoints import compose
from tests.fairchem2.helpers import TINY_OVERRIDES

DIRECT = CONFIGS / "esen_categorical_direct.yaml"


@pytest.fixture(scope="module")
def trained():
    """The checkpoint's model: its heads built from the embedded bins."""
    return compose(DIRECT, TINY_OVERRIDES)


def _start(model: torch.nn.Module, tasks: list) -> None:
    BinsMatchCallback().on_train_start(None, SimpleNamespace(model=model, tasks=tasks))


def test_the_same_bins_train(trained) -> None:
    _start(trained.model, trained.tasks)
    _start(trained.model, compose(DIRECT, TINY_OVERRIDES).tasks)


def test_another_energy_support_is_refused_naming_both(trained) -> None:
    tasks = compose(DIRECT, [*TINY_OVERRIDES, "bins.support.high=8.0",
                             "bins.support.num_bins=64"]).tasks
    with pytest.raises(HeadsMismatchError) as err:
        _start(trained.model, tasks)
    msg = str(err.value)
    assert msg.startswith("the model's energy head decodes differently from how this run's "
                          "bins encode its targets (support: head [-4.0206, 6.12093] in 128 "
                          "bins, hl_gauss sigma 0.05942 vs bins [-4.0206, 8] in 64 bins, "
                          "hl_gauss sigma 0.1409)")
    assert "model.heads=null" in msg


def test_another_energy_transform_is_refused(trained) -> None:
    tasks = compose(DIRECT, [*TINY_OVERRIDES, "bins.energy.mean=0.5"]).tasks
    with pytest.raises(HeadsMismatchError, match=r"\(mean: head -?[0-9.e-]+ vs bins 0\.5\)"):
        _start(trained.model, tasks)


def test_other_element_references_are_refused_naming_the_element(trained) -> None:
    tasks = compose(DIRECT, TINY_OVERRIDES).tasks
    energy = next(t for t in tasks if t.name == "energy")
    with torch.no_grad():
        energy.element_references.element_references[29] += 0.25  # Cu
    with pytest.raises(HeadsMismatchError,
                       match=r"element references of 1 element\(s\) \(Cu head -?[0-9.]+ vs "
                             r"bins -?[0-9.]+\)"):
        _start(trained.model, tasks)


def test_another_force_support_is_refused(trained) -> None:
    tasks = compose(DIRECT, [*TINY_OVERRIDES, "bins.force_support.low=-10.0",
                             "bins.force_support.high=10.0"]).tasks
    with pytest.raises(HeadsMismatchError, match=r"^the model's force-magnitude head .*"
                                                 r"vs bins \[-10, 10\] in 128 bins"):
        _start(trained.model, tasks)


@pytest.mark.parametrize("config", ["esen_categorical_conserving.yaml",
                                    "esen_categorical_direct.yaml",
                                    "uma_categorical_conserving.yaml"])
def test_the_shipped_configs_run_the_check(config: str) -> None:
    callbacks = compose(CONFIGS / config, TINY_OVERRIDES).config.runner.callbacks
    assert "fairchem_categorical.fairchem2.callbacks.BinsMatchCallback" in [
        c["_target_"] for c in callbacks]
