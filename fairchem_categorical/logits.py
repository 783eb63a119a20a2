"""Output layer that maps features to histogram logits (pure torch, shared by both lines).

Free logits make the decoded mean a weak function of the features once the
histogram is sharp: d(mean)/d(logits) is the covariance of bin centers and
logit changes under p, which shrinks with the predicted width. Conservative
forces are derivatives of that mean, so they stop learning as cross-entropy
sharpens the histogram. Writing the logits as a location-scale bump plus a
free residual,

    logits_k = -((c_k - m) / s)^2 / 2 + r_k,

keeps every categorical distribution reachable (through r) while the mean
follows m with unit slope at any sharpness. ``loc_gain`` sets the units the
location layer works in: a head whose support is standardised energy passes
1/std, so the layer regresses eV like a scalar head and its gradients (the
conservative forces) start at the same scale instead of std times smaller.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from fairchem_categorical.histogram import HistogramSupport, at_least_float32, without_autocast


def _softplus_inverse(x: float) -> float:
    return x + math.log(-math.expm1(-x))


class LocationScaleLogits(nn.Module):
    """Features (..., F) -> logits (..., K) over ``support``'s bins.

    Starts at a bump centred at ``loc0`` with width ``scale0`` (support units)
    for every input: zero weights, so step 0 predicts the data's typical value.
    The width never drops below ``min_scale_bins`` bin widths, where the mean
    would snap to bin centers.
    """

    def __init__(self, in_features: int, support: HistogramSupport, loc0: float = 0.0,
                 scale0: float = 1.0, min_scale_bins: float = 0.5, loc_gain: float = 1.0,
                 ) -> None:
        super().__init__()
        if not (math.isfinite(loc_gain) and loc_gain > 0):
            raise ValueError(f"loc_gain must be finite and > 0, got {loc_gain}")
        self.support = support
        self.loc_gain = loc_gain
        self.loc0 = loc0
        self.min_scale = min_scale_bins * support.width
        if not scale0 > self.min_scale:
            raise ValueError(
                f"initial scale {scale0} must exceed the minimum {self.min_scale} "
                f"({min_scale_bins} bin widths)"
            )
        self.location = nn.Linear(in_features, 1)
        self.scale = nn.Linear(in_features, 1)
        self.residual = nn.Linear(in_features, support.num_bins)
        for layer in (self.location, self.scale, self.residual):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
        with torch.no_grad():
            self.scale.bias.fill_(_softplus_inverse(scale0 - self.min_scale))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        # float32 or better even under autocast: a bf16 location would round the
        # decoded value (and the conservative forces) to 3 significant digits.
        with without_autocast(features):
            features = at_least_float32(features)
            m = self.loc0 + self.loc_gain * self.location(features)
            s = nn.functional.softplus(self.scale(features)) + self.min_scale
            centers = self.support.centers_like(features)
            return -0.5 * ((centers - m) / s) ** 2 + self.residual(features)
