"""Cross-entropy for the OCP trainer's ``loss_functions:`` section.

fairchem 1.10 builds every loss as ``DDPLoss(name)``, which instantiates the
registered class without arguments and does the DDP-correct mean over the
per-sample values returned here; so the loss needs no support: the binned
dataset supplies the target histograms.
"""

from __future__ import annotations

import torch
from fairchem.core.common.registry import registry
from torch import nn

from fairchem_categorical.losses import soft_cross_entropy


@registry.register_loss("categorical_cross_entropy")
class CategoricalCrossEntropyLoss(nn.Module):
    """Per-sample -sum_k p_k log q_k of logits (n, K) against histograms (n, K).

    A shallow ensemble's M members come flattened, logits and tiled targets (n, M K)
    (``DDPLoss`` wants equal shapes): with ``num_bins`` (K, set by ``CategoricalTrainer``
    from the support) they are split back and the loss is the mean of the members' own.
    """

    num_bins: int | None = None

    def forward(self, pred: torch.Tensor, target: torch.Tensor, natoms: torch.Tensor
                ) -> torch.Tensor:
        k = self.num_bins
        if k and pred.shape[-1] > k:
            if pred.shape[-1] % k or pred.shape != target.shape:
                raise ValueError(f"member logits {tuple(pred.shape)} and targets "
                                 f"{tuple(target.shape)} do not split into {k} bins")
            members = pred.reshape(pred.shape[0], -1, k)
            return soft_cross_entropy(members, target.reshape(members.shape)).mean(-1)
        return soft_cross_entropy(pred, target)
