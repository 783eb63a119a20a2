"""fairchem-core 2.x runner callbacks: targets clamped to the support, per epoch and run;
training that starts without a (stale) fitted epistemic state; and heads that decode as
this run's bins encode (``BinsMatchCallback``).

``CategoricalLoss`` counts the scalar targets it clamps (and those it sees) on each rank,
in training and in validation alike (fairchem's eval unit shares the tasks). This
callback, listed in the runner's ``callbacks`` (``base_train.yaml``), reads the counters
at the edges of fairchem's own loop: what changed between two validation passes is
training, what changed during one is validation. It sums over ranks, logs a line per
epoch and per validation pass, and at the end of training logs the run's totals and
writes ``out_of_support.json`` into the run folder (``core.clipping``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from fairchem.core.common import distutils
from torchtnt.framework.callback import Callback

from fairchem_categorical.clipping import ENERGY, FORCE, Counts, SupportTally
from fairchem_categorical.epistemic import EpistemicState
from fairchem_categorical.fairchem2.heads import CategoricalDirectForceHead, CategoricalEnergyHead
from fairchem_categorical.fairchem2.tasks import CategoricalLoss
from fairchem_categorical.readout import check_head_matches
from fairchem_categorical.targets import EnergyTransform


def kind_of(level: str) -> str:
    """Per-atom categorical targets are force magnitudes, per-system ones energies."""
    return FORCE if level == "atom" else ENERGY


def _sum_over_ranks(values: list[int]) -> list[int]:
    """Sum a list of counts over the data-parallel ranks (on the ranks' device)."""
    if not values:
        return values
    out = distutils.all_reduce(torch.tensor(values, dtype=torch.long),
                               device=distutils.get_device_for_local_rank())
    return [int(v) for v in torch.as_tensor(out).reshape(-1).tolist()]


class OutOfSupportCallback(Callback):
    """Reports how many categorical training/validation targets fell outside the support."""

    def __init__(self) -> None:
        self.tally = SupportTally(reduce=_sum_over_ranks)
        self._last = Counts()
        self._pending = Counts()  # training counts since the last epoch line
        self._kinds: list[str] = []

    def _now(self, unit: Any) -> Counts:
        counts = Counts()
        for task in getattr(unit, "tasks", []):
            if isinstance(task.loss_fn, CategoricalLoss):
                hist = task.loss_fn.loss_fn
                counts.add(kind_of(task.level), hist.num_clipped, hist.num_targets)
        return counts

    def _take(self, unit: Any) -> Counts:
        now = self._now(unit)
        delta = now.minus(self._last)
        self._last = now
        return delta

    def on_train_start(self, state: Any, unit: Any) -> None:
        levels = {kind_of(t.level) for t in getattr(unit, "tasks", [])
                  if isinstance(t.loss_fn, CategoricalLoss)}
        self._kinds = sorted(levels)
        self._last = self._now(unit)

    def on_eval_start(self, state: Any, unit: Any) -> None:
        if self._kinds:
            self._pending.merge(self._take(unit))

    def on_eval_end(self, state: Any, unit: Any) -> None:
        if self._kinds:
            self.tally.add_epoch("val", self._take(unit), self._current_epoch(unit),
                                 self._kinds)

    @staticmethod
    def _current_epoch(unit: Any) -> int:
        """The 1-based epoch a validation pass belongs to (at an epoch's end: that one)."""
        progress = getattr(unit, "train_progress", None)
        if progress is None:
            return 0
        return int(progress.num_epochs_completed) + int(
            progress.num_steps_completed_in_epoch > 0)

    def on_train_epoch_end(self, state: Any, unit: Any) -> None:
        if not self._kinds:
            return
        self._pending.merge(self._take(unit))
        epoch = int(unit.train_progress.num_epochs_completed)  # already counts this one
        self.tally.add_epoch("train", self._pending, epoch, self._kinds)
        self._pending = Counts()

    def on_train_end(self, state: Any, unit: Any) -> None:
        if not self._kinds:
            return
        job = unit.job_config
        folder = Path(job.run_dir) / str(job.timestamp_id)
        self.tally.finish(folder, write=distutils.is_master())


class FittedUncertaintyCallback(Callback):
    """Training starts from no fitted epistemic state, in the model and in its EMA copy.

    A fine-tune that starts from a fitted checkpoint would otherwise keep the statistics of
    the old features: the raw model drops them at its first training step (the readout
    does), but fairchem's EMA model, copied before that step and only ever evaluated, would
    carry them into the new checkpoint, which predict loads. Refit with fit-uncertainty (or
    ``train --fit-uncertainty``).
    """

    def on_train_start(self, state: Any, unit: Any) -> None:
        for model in (getattr(unit, "model", None), getattr(unit, "ema_model", None)):
            for module in model.modules() if model is not None else ():
                if isinstance(module, EpistemicState):
                    module.forget("training changes the features it was fitted on")


class BinsMatchCallback(Callback):
    """Training starts only if the model's categorical heads decode the way this run's bins
    encode the targets.

    ``model.heads=null`` (fine-tuning that keeps a checkpoint's heads, as active learning
    does) takes the heads, their support and energy transform, from the checkpoint, while the
    dataset, the losses and the energy task's element references come from this run's bins.
    Nothing else compares them: a different support or transform would train targets in one
    space against outputs in another. Refuses with both named (``HeadsMismatchError``).
    """

    def on_train_start(self, state: Any, unit: Any) -> None:
        check_heads_match_tasks(getattr(unit, "model", None), getattr(unit, "tasks", []))


def check_heads_match_tasks(model: Any, tasks: list) -> None:
    """Each categorical head against the task that trains its logits (support, and for the
    energy head the transform and the energy task's element references)."""
    if model is None:
        return
    by_name = {t.name: t for t in tasks}
    for head in model.modules():
        if not isinstance(head, CategoricalEnergyHead | CategoricalDirectForceHead):
            continue
        task = by_name.get(head.logits_task)
        if task is None or not isinstance(task.loss_fn, CategoricalLoss):
            continue
        loss = task.loss_fn
        if isinstance(head, CategoricalDirectForceHead):
            check_head_matches("force-magnitude head", head.support.spec, loss.loss_fn.support.spec)
            continue
        # the loss's transform (configs before it carried one: the head's, so that only
        # the energy task's element references are compared)
        refs = getattr(by_name.get(head.energy_task), "element_references", None)
        bins_energy = loss.energy or (head.energy_transform.spec if refs is not None else None)
        if bins_energy is not None and refs is not None:
            values = refs.element_references.detach().double().cpu().tolist()
            bins_energy = EnergyTransform(**{**bins_energy.to_dict(),
                                             "element_references": values})
        check_head_matches("energy head", head.support.spec, loss.loss_fn.support.spec,
                           head.energy_transform.spec, bins_energy)
