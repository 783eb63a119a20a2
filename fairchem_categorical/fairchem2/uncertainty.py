"""Fit and store the uncertainty state of a fairchem-core 2.x categorical checkpoint.

``fit`` runs the model (EMA weights, through fairchem's predict unit) over the training
structures once while the energy head collects its feature statistics; ``write`` stores
a fitted state, a temperature and epistemic scales in a copy of the inference
checkpoint, in both its raw and its EMA state dicts, so every loader applies them.
The math is the core's (``epistemic``, ``calibration``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch

from fairchem_categorical.epistemic import (
    DEFAULT_METHOD,
    FeatureStatistics,
    categorical_energy_heads,
    fit_state,
    read_head_state,
    write_head_state,
)
from fairchem_categorical.fairchem2.heads import CategoricalEnergyHead
from fairchem_categorical.fairchem2.predict import load_unit, stream_unit

HEAD_CLASS = CategoricalEnergyHead.__name__


def _energy_heads(ckpt: Any, path: str | Path = "the checkpoint",
                  what: str = "this") -> list[str]:
    configured = (getattr(ckpt, "model_config", None) or {}).get("heads", {})
    modules = {name: str(cfg.get("module", "")).rsplit(".", 1)[-1]
               for name, cfg in configured.items()}
    return categorical_energy_heads(modules, (HEAD_CLASS, "categorical_energy_head"), path,
                                    what)


def require_categorical(checkpoint: str | Path, what: str) -> None:
    """A clear error, before any prediction, if ``checkpoint`` has no categorical energy head."""
    _energy_heads(_load(checkpoint), checkpoint, what)


def _load(checkpoint: str | Path) -> Any:
    path = Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    return torch.load(path, map_location="cpu", weights_only=False)


def read_state(checkpoint: str | Path) -> dict[str, Any] | None:
    """The energy head's fitted epistemic state (as prediction uses it), or None."""
    ckpt = _load(checkpoint)
    state = ckpt.ema_state_dict or ckpt.model_state_dict
    return read_head_state(state, _energy_heads(ckpt, checkpoint)[0])


def fit(checkpoint: str | Path, frames: Iterable, method: str = DEFAULT_METHOD,
        batch_size: int = 8, device: str = "cpu",
        progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """One pass over ``frames`` (the training set) -> the fitted epistemic state.

    ``frames`` may be a stream (``iter_frames``): one batch is held at a time, and the
    statistics (sums over atoms) stay the same size whatever the dataset's."""
    unit = load_unit(checkpoint, device)
    head = unit.head(CategoricalEnergyHead)
    if head is None:
        raise ValueError(f"{checkpoint} has no categorical energy head (a scalar model?)")
    with head.epistemic.collecting(FeatureStatistics()) as stats:
        for _ in stream_unit(unit, frames, batch_size=batch_size, progress=progress):
            pass  # the head collects; the predictions themselves are not needed
    return fit_state(stats, method)


def write(checkpoint: str | Path, out: str | Path, temperature_factor: float | None = None,
          epistemic: dict[str, Any] | None = None, alpha: dict[str, float] | None = None,
          predictive: dict[str, Any] | None = None, force_scale: float | None = None
          ) -> float:
    """A copy of ``checkpoint`` with the energy head's state updated; returns its temperature.

    See ``epistemic.write_head_state`` for the arguments.
    """
    ckpt = _load(checkpoint)
    temperature = None
    for head in _energy_heads(ckpt):
        for state in (ckpt.model_state_dict, ckpt.ema_state_dict):
            if state:
                t = write_head_state(state, head, temperature_factor, epistemic, alpha,
                                     predictive, force_scale)
                temperature = t if temperature is None else temperature
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, out)
    return float(temperature)
