"""Task pieces that let fairchem's MLIPTrainEvalUnit train on histogram logits.

A categorical task (``property: logits``) reads the binning-space target that
:class:`~fairchem_categorical.fairchem2.dataset.CategoricalAseDBDataset` adds to
each item. fairchem applies ``normalizer.norm`` to that target and
``normalizer.denorm`` to the prediction before its metrics; the
:class:`HistogramDecoder` makes the first the identity and the second the
histogram's expected value, so fairchem's own MAE metric reports the decoded
error in binning space.
"""

from __future__ import annotations

from typing import Any

import torch
from fairchem.core.common.registry import registry
from fairchem.core.modules.loss import DDPMTLoss
from fairchem.core.modules.normalization.normalizer import Normalizer

from fairchem_categorical.histogram import HistogramSupport
from fairchem_categorical.losses import HistogramLoss
from fairchem_categorical.targets import EnergyTransform


class HistogramDecoder(Normalizer):
    """Normalizer for a categorical task: targets pass through, logits decode to the mean."""

    def __init__(self, support: dict[str, Any]) -> None:
        super().__init__(mean=0.0, rmsd=1.0)
        self.support = HistogramSupport.from_spec(dict(support))

    def norm(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor

    def denorm(self, normed_tensor: torch.Tensor) -> torch.Tensor:
        """Logits (B, K) -> their mean; a shallow ensemble's (B, M, K) or flattened
        (B, M * K) -> the mean of the members' means (what the head decodes)."""
        k = self.support.num_bins
        x = normed_tensor
        if x.dim() < 2 or x.shape[-1] % k:
            return x
        if x.dim() == 2 and x.shape[-1] > k:
            x = x.reshape(x.shape[0], -1, k)
        mean = self.support.mean(x)
        return mean.mean(1) if x.dim() == 3 else mean


@registry.register_loss("categorical")
class CategoricalLoss(DDPMTLoss):
    """Cross-entropy on histogram logits with fairchem's DDP-correct reduction.

    Targets are binning-space scalars (one per system or per atom) encoded on the
    fly, or histograms with the support's number of bins. ``loss_fn.num_clipped`` /
    ``loss_fn.num_targets`` count the scalar targets clamped to the support's edge, of
    those seen; ``fairchem2.callbacks.OutOfSupportCallback`` reports them. ``energy``: the
    energy transform of the targets (``${bins.energy}``), for ``BinsMatchCallback``.
    """

    def __init__(
        self,
        support: dict[str, Any],
        ce_weight: float = 1.0,
        l1_weight: float = 0.0,
        reduction: str = "mean",
        coefficient: float = 1.0,
        energy: dict[str, Any] | None = None,
    ) -> None:
        histogram_loss = HistogramLoss(HistogramSupport.from_spec(dict(support)), ce_weight,
                                       l1_weight)
        super().__init__(loss_fn=histogram_loss, reduction=reduction, coefficient=coefficient)
        # the transform the dataset bins the energy targets with (``bins.energy``): what
        # ``BinsMatchCallback`` checks the model's energy head against
        self.energy = None if energy is None else EnergyTransform(**dict(energy))

    def forward(
        self,
        input: torch.Tensor,
        target: torch.Tensor,
        mult_mask: torch.Tensor,
        natoms: torch.Tensor,
    ) -> torch.Tensor:
        if input.shape[0] != target.shape[0] or input.shape[0] != mult_mask.shape[0]:
            raise ValueError(
                f"categorical loss: logits {tuple(input.shape)}, targets {tuple(target.shape)} "
                f"and mask {tuple(mult_mask.shape)} disagree on the number of samples"
            )
        mask = mult_mask.reshape(input.shape[0], -1).all(-1)
        k = self.loss_fn.support.num_bins
        if input.dim() == 2 and input.shape[-1] > k and input.shape[-1] % k == 0:
            input = input.reshape(input.shape[0], -1, k)  # a shallow ensemble's members
        if not self.loss_fn.is_histogram(input, target):
            target = target.reshape(input.shape[0])
        # Masked-out samples carry inf placeholders from fairchem's collater.
        fill = torch.zeros_like(target)
        if self.loss_fn.is_histogram(input, target):
            fill[..., 0] = 1.0
            safe = torch.where(mask.unsqueeze(-1), target, fill)
        else:
            safe = torch.where(mask, target, fill)
        # the mask keeps fill values (and atoms the task ignores) out of the clamp counts
        loss = self.loss_fn(input, safe, mask) * mask
        loss = self._reduction(input, mask, loss, natoms)
        return self.coefficient * loss
