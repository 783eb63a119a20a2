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
    """Per-sample -sum_k p_k log q_k of logits (n, K) against histograms (n, K)."""

    def forward(self, pred: torch.Tensor, target: torch.Tensor, natoms: torch.Tensor
                ) -> torch.Tensor:
        return soft_cross_entropy(pred, target)
