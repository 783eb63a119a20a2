"""Categorical (histogram) energy and force heads for fairchem, with uncertainty."""

from fairchem_categorical.histogram import HistogramSupport, SupportSpec
from fairchem_categorical.losses import HistogramLoss, soft_cross_entropy

__version__ = "0.1.0"
__all__ = ["HistogramLoss", "HistogramSupport", "SupportSpec", "soft_cross_entropy"]
