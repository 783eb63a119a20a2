"""Post-hoc temperature scaling of a fairchem-core 2.x categorical checkpoint."""

from __future__ import annotations

from pathlib import Path

import torch

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
