"""Fit and store the uncertainty state of a fairchem-core 1.10 categorical checkpoint.

The same steps as the 2.x adapter: ``fit`` runs the model (EMA weights, as prediction
uses them) once over the training structures while the energy head collects its feature
statistics; ``write`` stores a fitted state, a temperature and epistemic scales in a copy
of the trainer checkpoint's ``state_dict`` (the EMA holds parameters only; these are not
parameters), so ``predict``, the OCP trainer and fairchem's calculator load them.
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
from fairchem_categorical.fairchem1.predict import LoadedModel, stream_loaded
from fairchem_categorical.fairchem1.predict import load_checkpoint as _load
from fairchem_categorical.fairchem1.train import ENERGY_HEADS


def _energy_heads(ckpt: Any, path: str | Path = "the checkpoint",
                  what: str = "this") -> list[str]:
    modules = {name: str(cfg.get("module", "")).rsplit(".", 1)[-1]
               for name, cfg in (ckpt["config"]["model"].get("heads") or {}).items()}
    return categorical_energy_heads(modules, ENERGY_HEADS, path, what)


def require_categorical(checkpoint: str | Path, what: str) -> None:
    """A clear error, before any prediction, if ``checkpoint`` has no categorical energy head."""
    _energy_heads(_load(checkpoint), checkpoint, what)


def read_state(checkpoint: str | Path) -> dict[str, Any] | None:
    """The energy head's fitted epistemic state, or None."""
    ckpt = _load(checkpoint)
    return read_head_state(ckpt["state_dict"], _energy_heads(ckpt, checkpoint)[0])


def fit(checkpoint: str | Path, frames: Iterable, method: str = DEFAULT_METHOD,
        batch_size: int = 8, device: str = "cpu",
        progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """One pass over ``frames`` (the training set) -> the fitted epistemic state.

    ``frames`` may be a stream (``iter_frames``): one batch is held at a time, and the
    statistics (sums over atoms) stay the same size whatever the dataset's."""
    loaded = LoadedModel(checkpoint, device)
    if loaded.energy_head is None:
        raise ValueError(f"{checkpoint} has no categorical energy head (a scalar model?)")
    with loaded.energy_head.epistemic.collecting(FeatureStatistics()) as stats:
        for _ in stream_loaded(loaded, frames, batch_size=batch_size, progress=progress):
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
    temperatures = [write_head_state(ckpt["state_dict"], head, temperature_factor, epistemic,
                                     alpha, predictive, force_scale)
                    for head in _energy_heads(ckpt)]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, out)
    return float(temperatures[0])
