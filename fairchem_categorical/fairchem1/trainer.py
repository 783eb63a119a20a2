"""fairchem 1.10's OCP trainer, binning the categorical targets in its loss path.

The dataset (``CategoricalLmdbDataset``) loads items as fairchem's ``LmdbDataset`` does;
``_compute_loss``, the loss path of fairchem's own loop (training and validation alike),
bins each batch (``binner.BatchBinner``: the energy in the binning space, |F_i|, their
HL-Gauss histograms by ``HistogramSupport.encode``, the same core code as the fairchem
2.x loss) on the batch's device before fairchem's losses read ``energy_categorical`` and
``force_magnitude``, and counts the targets clamped to the support there, in the main
process, summed over ranks and reported per epoch, per validation pass and at the end of
training (log lines and ``out_of_support.json`` beside the checkpoint). Everything else
is ``OCPTrainer``: the categorical configs name this class as their ``trainer``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from fairchem.core.common import distutils
from fairchem.core.common.registry import registry
from fairchem.core.trainers.ocp_trainer import OCPTrainer

from fairchem_categorical.binner import BatchBinner
from fairchem_categorical.clipping import ENERGY, FORCE, Counts, SupportTally


def _sum_over_ranks(values: list[int]) -> list[int]:
    """Sum a list of counts over the data-parallel ranks."""
    if not values or distutils.get_world_size() == 1:
        return values
    nccl = torch.distributed.get_backend() == "nccl"  # NCCL reduces CUDA tensors only
    out = distutils.all_reduce(torch.tensor(values, dtype=torch.long),
                               device="cuda" if nccl else None)
    return [int(v) for v in torch.as_tensor(out).reshape(-1).tolist()]


@registry.register_trainer("categorical_ocp")
class CategoricalTrainer(OCPTrainer):
    """``OCPTrainer`` + per-epoch and per-run counts of clamped categorical targets."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # BaseTrainer has replaced config["dataset"] by the train split's block
        cat = (self.config.get("dataset") or {}).get("categorical") or {}
        self.tally_kinds = sorted([ENERGY] + ([FORCE] if cat.get("force_support") else []))
        self.binner = BatchBinner(cat, owner="CategoricalTrainer") if cat else None
        trained = {target for target, _ in getattr(self, "loss_functions", [])}
        binned = set(self.binner.keys.values()) if self.binner else set()
        for key, spec in (("energy_categorical", "support"),
                          ("force_magnitude", "force_support")):
            if key in trained and key not in binned:
                raise ValueError(f"the loss trains {key}, but dataset.categorical has no "
                                 f"'{spec}' to bin its targets on (see fit-bins)")
        self.support_tally = SupportTally(reduce=_sum_over_ranks)
        self._counts = {"train": Counts(), "val": Counts()}
        if self.binner is not None:  # a shallow ensemble's flattened members split by K
            for target, info in getattr(self, "loss_functions", []):
                loss = getattr(info.get("fn"), "loss_fn", None)
                if target == self.binner.keys["energy"] and hasattr(loss, "num_bins"):
                    loss.num_bins = self.binner.support.num_bins

    def _compute_loss(self, out: dict, batch: Any) -> torch.Tensor:
        split = "train" if self.model.training else "val"

        if self.binner is not None:
            counted = {}
            for kind, key in self.binner.keys.items():
                spec = self.output_targets.get(key, {})
                if spec.get("level") == "atom" and spec.get("train_on_free_atoms"):
                    counted[kind] = batch.fixed.reshape(-1) == 0  # what the loss trains on
            for kind, (clamped, seen) in self.binner(batch, counted).items():
                self._counts[split].add(kind, clamped, seen)
        key = self.binner.keys["energy"] if self.binner is not None else None
        pred = out.get(key) if key else None
        k = self.binner.support.num_bins if key else 0
        if pred is not None and pred.shape[-1] > k:
            # a shallow ensemble's members ((B, M, K), flattened to (B, M K) by OCPTrainer's
            # _forward): targets tiled to match, as fairchem's DDPLoss compares shapes (the
            # loss splits them back, CategoricalCrossEntropyLoss)
            target = batch[key]
            batch[key] = target.repeat(1, pred.shape[-1] // k)
            try:
                loss = super()._compute_loss(out, batch)
            finally:
                batch[key] = target
        else:
            loss = super()._compute_loss(out, batch)
        if split == "train" and self.step % len(self.train_loader) == 0:
            self._report("train")
        return loss

    def _report(self, split: str) -> None:
        epoch = max(1, math.ceil(self.epoch - 1e-9))
        self.support_tally.add_epoch(split, self._counts[split], epoch, self.tally_kinds)
        self._counts[split] = Counts()

    def validate(self, split: str = "val", disable_tqdm: bool = False) -> dict:
        metrics = super().validate(split=split, disable_tqdm=disable_tqdm)
        if split == "val":
            self._report("val")
        return metrics

    def train(self, disable_eval_tqdm: bool = False) -> None:
        super().train(disable_eval_tqdm=disable_eval_tqdm)
        self.support_tally.finish(self.config["cmd"]["checkpoint_dir"],
                                  write=distutils.is_master())
