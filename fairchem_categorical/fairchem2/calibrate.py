"""Post-hoc temperature scaling of a fairchem-core 2.x categorical checkpoint."""

from __future__ import annotations

from pathlib import Path

import torch

HEAD_CLASS = "CategoricalEnergyHead"


def _temperature_keys(ckpt, path: str | Path) -> list[str]:  # noqa: ANN001
    heads = {name: str(cfg.get("module", "")) for name, cfg in
             (getattr(ckpt, "model_config", None) or {}).get("heads", {}).items()}
    if not any(module.endswith(HEAD_CLASS) for module in heads.values()):
        found = ", ".join(m.rsplit(".", 1)[-1] for m in heads.values()) or "none"
        raise ValueError(
            f"calibrate needs a categorical checkpoint (one with a {HEAD_CLASS}); {path} "
            f"has no categorical energy head (its heads: {found}), so there is no histogram "
            "to calibrate")
    heads = [name for name, module in heads.items() if module.endswith(HEAD_CLASS)]
    keys = [k for k in ckpt.model_state_dict
            if k.endswith(".support.temperature") and any(f"output_heads.{h}." in k
                                                          for h in heads)]
    if not keys:
        raise ValueError("no support temperature found in the checkpoint's state dict")
    return keys


def require_categorical(checkpoint: str | Path) -> None:
    """A clear error, before any prediction, if ``checkpoint`` has nothing to calibrate."""
    _temperature_keys(torch.load(checkpoint, map_location="cpu", weights_only=False),
                      checkpoint)


def write_temperature(checkpoint: str | Path, out: str | Path, factor: float) -> float:
    """Multiply the stored temperature by ``factor``; returns the new temperature."""
    ckpt = torch.load(checkpoint, map_location="cpu", weights_only=False)
    keys = _temperature_keys(ckpt, checkpoint)
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
