"""The ``--device`` of every command: checked once, then handed to fairchem as it accepts it.

fairchem-core 2.x's predict unit takes only ``cpu`` or ``cuda`` (it asserts so) and runs on
the *current* CUDA device; fairchem 1.10's calculator takes ``cpu=True/False`` likewise. So
``cuda:N`` is carried out by making N the current device, and the units get ``cuda``.
"""

from __future__ import annotations

import torch


def check_device(name: str, flag: str = "--device") -> str:
    """``name`` if it is ``cpu``, ``cuda`` or ``cuda:N`` that this machine has; else a
    ValueError naming the problem."""
    if not isinstance(name, str):
        raise ValueError(f"{flag} {name!r}: use cpu, cuda or cuda:N")
    kind, _, index = name.partition(":")
    if kind == "cpu" and not index:
        return name
    if kind != "cuda":
        raise ValueError(f"{flag} {name}: use cpu, cuda or cuda:N")
    if index and not index.isdigit():
        raise ValueError(f"{flag} {name}: N in cuda:N must be a device number, e.g. cuda:0")
    if not torch.cuda.is_available():
        raise ValueError(f"{flag} {name}: CUDA is not available here (no GPU or no CUDA "
                         "build of torch); use --device cpu")
    if index and int(index) >= torch.cuda.device_count():
        raise ValueError(f"{flag} {name}: this machine has {torch.cuda.device_count()} "
                         "CUDA device(s)")
    return name


def default_device() -> str:
    """fairchem's default: ``cuda`` when there is a GPU, else ``cpu``."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def fairchem_device(name: str | None) -> str:
    """``cpu`` or ``cuda``, as fairchem's units take it; ``cuda:N`` makes N the current
    CUDA device first (fairchem then runs on it). ``None``: fairchem's default."""
    name = check_device(default_device() if name is None else name)
    kind, _, index = name.partition(":")
    if kind == "cuda" and index:
        torch.cuda.set_device(int(index))
    return kind


def cuda_visible(name: str) -> dict[str, str]:
    """Environment for a child process (fairchem's training CLI) that should run on
    ``name``: ``cuda:N`` shows it device N alone, as its ``cuda:0``."""
    kind, _, index = check_device(name).partition(":")
    return {"CUDA_VISIBLE_DEVICES": index} if kind == "cuda" and index else {}
