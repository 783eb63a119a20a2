"""Post-hoc temperature scaling of a fairchem-core 2.x categorical checkpoint."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from fairchem_categorical.calibration import (
    bin_index_from_centers,
    fit_temperature,
    logits_from_probs,
)
from fairchem_categorical.predictions import StructurePrediction

HEAD_CLASS = "CategoricalEnergyHead"


def _temperature_keys(ckpt) -> list[str]:  # noqa: ANN001
    heads = [name for name, cfg in ckpt.model_config["heads"].items()
             if str(cfg.get("module", "")).endswith(HEAD_CLASS)]
    if not heads:
        raise ValueError("the checkpoint has no categorical energy head to calibrate")
    keys = [k for k in ckpt.model_state_dict
            if k.endswith(".support.temperature") and any(f"output_heads.{h}." in k
                                                          for h in heads)]
    if not keys:
        raise ValueError("no support temperature found in the checkpoint's state dict")
    return keys


def fit_from_predictions(preds: list[StructurePrediction]) -> float:
    """The temperature (relative to the one the predictions used) minimising target NLL."""
    if any(p.energy_probs is None for p in preds):
        raise ValueError("predictions carry no energy histograms (not a categorical model?)")
    targets = np.array([p.energy_target for p in preds])
    if not np.isfinite(targets).all():
        raise ValueError("calibration needs energy targets for every validation structure")
    probs = np.stack([p.energy_probs for p in preds])
    centers = np.stack([p.energy_bin_centers for p in preds])
    return fit_temperature(logits_from_probs(probs), bin_index_from_centers(centers, targets))


def write_temperature(checkpoint: str | Path, out: str | Path, factor: float) -> float:
    """Multiply the stored temperature by ``factor``; returns the new temperature."""
    ckpt = torch.load(checkpoint, map_location="cpu", weights_only=False)
    keys = _temperature_keys(ckpt)
    new = float(ckpt.model_state_dict[keys[0]]) * factor
    for state in (ckpt.model_state_dict, ckpt.ema_state_dict):
        if not state:
            continue
        for key in [k for k in state if k.endswith(".support.temperature")]:
            if key in keys or any(key.endswith(k) for k in keys):
                state[key] = torch.tensor(new, dtype=state[key].dtype)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, out)
    return new
