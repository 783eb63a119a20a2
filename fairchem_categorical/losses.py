"""Categorical losses on histogram logits (pure torch, per sample, unreduced).

Both fairchem lines wrap these with their own DDP-correct reduction, so the
math lives here once and the adapters only reduce.
"""

from __future__ import annotations

import torch
from torch import nn

from fairchem_categorical.histogram import HistogramSupport, has_values, without_autocast


def soft_cross_entropy(logits: torch.Tensor, target_probs: torch.Tensor) -> torch.Tensor:
    """-sum_k p_k log q_k per sample, in float32 even under bf16 autocast."""
    if logits.shape != target_probs.shape:
        raise ValueError(
            f"logits {tuple(logits.shape)} and target histograms {tuple(target_probs.shape)} "
            "must have the same shape"
        )
    with without_autocast(logits):
        logp = torch.log_softmax(logits.float(), dim=-1)
        return -(target_probs.to(logp.dtype) * logp).sum(-1)


class HistogramLoss(nn.Module):
    """Cross-entropy against histogram targets, optionally plus L1 on the decoded mean.

    ``target`` is either histograms (..., K) or scalars (...) encoded on the fly
    with the support's encoding, so a binned dataset and a scalar one train alike;
    ``num_clipped`` counts the scalar targets clamped to the support's edge so far, of
    ``num_targets`` scalar targets seen (``mask``: only the samples it marks count, as
    the loss ignores the rest). Returns the unreduced per-sample loss (leading dims).
    """

    def __init__(
        self, support: HistogramSupport, ce_weight: float = 1.0, l1_weight: float = 0.0
    ) -> None:
        super().__init__()
        if ce_weight < 0 or l1_weight < 0:
            raise ValueError(f"loss weights must be >= 0, got ce={ce_weight}, l1={l1_weight}")
        self.support = support
        self.ce_weight = ce_weight
        self.l1_weight = l1_weight
        self.num_clipped = 0
        self.num_targets = 0

    def _count(self, scalar: torch.Tensor, mask: torch.Tensor | None) -> None:
        """Add the targets ``mask`` keeps, and those of them beyond the support, to the
        counters: one host sync, no boolean indexing (its size depends on the data)."""
        if not has_values(scalar):
            return
        keep = (torch.ones_like(scalar, dtype=torch.bool) if mask is None
                else mask.reshape(scalar.shape).bool())
        clipped, seen = torch.stack([(self.support.outside(scalar) & keep).sum(),
                                     keep.sum()]).tolist()
        self.num_clipped += int(clipped)
        self.num_targets += int(seen)

    def is_histogram(self, logits: torch.Tensor, target: torch.Tensor) -> bool:
        return target.shape[-1] == self.support.num_bins and target.dim() in (
            logits.dim(), logits.dim() - 1) and target.dim() >= 2

    def forward(self, logits: torch.Tensor, target: torch.Tensor,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        """Per-sample loss; ``logits`` (..., K), or (B, M, K) for a shallow ensemble of M
        members with one target per sample (B): the mean of the members' own losses."""
        members = logits.dim() == 3 and logits.shape[0] == target.shape[0] and (
            target.dim() == 2 and target.shape[-1] == self.support.num_bins
            or target.numel() == logits.shape[0])
        head = logits[:, 0] if members else logits
        if self.is_histogram(head, target) and target.dim() == head.dim():
            probs = target
            scalar = (target.float() * self.support.centers_like(target)).sum(-1)
        else:
            lead = head.shape[:-1]
            if tuple(target.shape) not in (tuple(lead), (*lead, 1)):
                raise ValueError(
                    f"targets of shape {tuple(target.shape)} match neither the logits' "
                    f"samples {tuple(lead)} nor histograms {(*lead, self.support.num_bins)}"
                )
            scalar = target.reshape(lead)
            self._count(scalar, mask)
            probs = self.support.encode(scalar)
        if members:
            loss = self.ce_weight * soft_cross_entropy(
                logits, probs.unsqueeze(1).expand_as(logits)).mean(1)
        else:
            loss = self.ce_weight * soft_cross_entropy(logits, probs)
        if self.l1_weight:
            decoded = self.support.mean(logits)
            decoded = decoded.mean(1) if members else decoded
            loss = loss + self.l1_weight * (decoded - scalar.to(decoded.dtype)).abs()
        return loss
