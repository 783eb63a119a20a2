"""OutOfSupportCallback between fairchem's loop hooks: what is training, what is validation.

Driven by hand in the order torchtnt calls it (train start, steps, a mid-epoch validation,
epoch end, the epoch-end validation, train end), with fairchem's own ``Task`` objects and
``CategoricalLoss`` counting real targets. The whole loop runs in the e2e tests.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import torch
from fairchem.core.units.mlip_unit.mlip_unit import Task

from fairchem_categorical.clipping import SUMMARY_FILE
from fairchem_categorical.fairchem2.callbacks import OutOfSupportCallback
from fairchem_categorical.fairchem2.tasks import CategoricalLoss, HistogramDecoder

SUPPORT = {"low": -1.0, "high": 1.0, "num_bins": 8}


def _task(name: str, level: str) -> Task:
    return Task(name=name, level=level, property="logits", out_spec=None,
                normalizer=HistogramDecoder(SUPPORT), datasets=["oc20"],
                loss_fn=CategoricalLoss(SUPPORT))


def _step(task: Task, targets: list[float], keep: list[bool] | None = None) -> None:
    n = len(targets)
    mask = torch.tensor(keep if keep is not None else [True] * n)
    task.loss_fn(torch.zeros(n, 8), torch.tensor(targets), mask, torch.ones(n))


def test_counts_are_split_into_training_and_validation_per_epoch(tmp_path) -> None:
    energy, force = _task("energy_categorical", "system"), _task("force_magnitude", "atom")
    progress = SimpleNamespace(num_epochs_completed=0, num_steps_completed_in_epoch=0)
    unit = SimpleNamespace(tasks=[energy, force], train_progress=progress,
                           job_config=SimpleNamespace(run_dir=str(tmp_path), timestamp_id="r"))
    cb = OutOfSupportCallback()
    lines: list[str] = []
    cb.tally.log = lines.append
    cb.on_train_start(None, unit)
    _step(energy, [0.0, 2.0, -3.0])  # 2 outside
    _step(force, [0.5, 1.5, 0.2, 9.0], keep=[True, True, False, False])  # 1 of 2 kept
    progress.num_steps_completed_in_epoch = 1
    cb.on_eval_start(None, unit)  # validation in the middle of epoch 1
    _step(energy, [5.0])
    cb.on_eval_end(None, unit)
    _step(energy, [0.1])
    progress.num_epochs_completed, progress.num_steps_completed_in_epoch = 1, 0
    cb.on_train_epoch_end(None, unit)
    cb.on_eval_start(None, unit)  # validation at the end of epoch 1
    _step(energy, [0.0, 0.0])
    _step(force, [2.0])
    cb.on_eval_end(None, unit)
    cb.on_train_end(None, unit)
    assert lines[:3] == [
        "out of support (clamped to the edge bin), epoch 1 validation: energy 1 of 1 "
        "(100.00%), force magnitude 0 of 0",
        "out of support (clamped to the edge bin), epoch 1 training: energy 2 of 4 (50.00%), "
        "force magnitude 1 of 2 (50.00%)",
        "out of support (clamped to the edge bin), epoch 1 validation: energy 0 of 2, "
        "force magnitude 1 of 1 (100.00%)",
    ]
    summary = json.loads((tmp_path / "r" / SUMMARY_FILE).read_text())
    assert summary["train"] == {"energy": {"outside": 2, "total": 4},
                                "force magnitude": {"outside": 1, "total": 2}}
    assert summary["val"] == {"energy": {"outside": 1, "total": 3},
                              "force magnitude": {"outside": 1, "total": 1}}


def test_a_model_without_categorical_tasks_writes_nothing(tmp_path) -> None:
    unit = SimpleNamespace(tasks=[], train_progress=SimpleNamespace(
        num_epochs_completed=1, num_steps_completed_in_epoch=0),
        job_config=SimpleNamespace(run_dir=str(tmp_path), timestamp_id="r"))
    cb = OutOfSupportCallback()
    for hook in (cb.on_train_start, cb.on_eval_start, cb.on_eval_end, cb.on_train_epoch_end,
                 cb.on_train_end):
        hook(None, unit)
    assert not (tmp_path / "r").exists()


def test_training_starts_without_a_fitted_state_in_the_model_and_its_ema_copy():
    """A fine-tune from a fitted checkpoint: fairchem copies the model into its EMA model
    before the first step, and only evaluates that copy, so the callback must drop the
    stale statistics in both (the saved EMA weights are what predict loads)."""
    from fairchem_categorical.fairchem2.callbacks import FittedUncertaintyCallback
    from tests.reference import fitted_energy_readout

    model, _ = fitted_energy_readout(SUPPORT)
    ema = torch.optim.swa_utils.AveragedModel(model)  # as fairchem's train unit builds it
    assert ema.module.epistemic.fitted and model.epistemic.fitted
    FittedUncertaintyCallback().on_train_start(None, SimpleNamespace(model=model,
                                                                     ema_model=ema))
    assert not model.epistemic.fitted and not ema.module.epistemic.fitted
    assert ema.state_dict()["module.epistemic._extra_state"] is None
    FittedUncertaintyCallback().on_train_start(None, SimpleNamespace(model=model,
                                                                     ema_model=None))
