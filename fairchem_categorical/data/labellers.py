"""Labellers: the ASE calculators that give generated frames their energies and forces.

``emt`` is ASE's EMT (seconds, no extra dependency; a toy). ``sevennet:<model>`` is a
DFT-trained universal potential from the ``sevenn`` wheel (``7net-0``, trained on MPtrj
PBE/PBE+U bulk crystals: a stand-in for DFT on surfaces and adsorbates, not DFT); it needs
the ``realistic`` extra. Through the Python API any zero-argument callable that returns
an ASE calculator is a labeller too.
"""

from __future__ import annotations

import importlib.util
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass

from ase.calculators.calculator import Calculator

__all__ = ["EMT_ELEMENTS", "LABELLERS", "REALISTIC_INSTALL", "Labeller", "labeller"]

#: What the ``realistic`` extra installs, in the words a missing-extra message uses.
REALISTIC_INSTALL = "pip install 'fairchem-categorical[realistic]'"

#: Elements ASE's EMT has parameters for.
EMT_ELEMENTS = frozenset({"Al", "Cu", "Ag", "Au", "Ni", "Pd", "Pt", "H", "C", "N", "O"})

#: Labeller families by the name before the colon, with the models each accepts.
LABELLERS: dict[str, tuple[str, ...]] = {
    "emt": (),
    "sevennet": ("7net-0",),
}


def _emt() -> Calculator:
    from ase.calculators.emt import EMT

    return EMT()


@dataclass(frozen=True)
class SevenNet:
    """SevenNet's ASE calculator on the CPU, offline, one torch thread (picklable, so a
    worker process can build its own)."""

    model: str

    def __call__(self) -> Calculator:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the model ships in the wheel
        import torch

        torch.set_num_threads(1)
        with warnings.catch_warnings():  # "no tensor product accelerator": CPU is the point
            warnings.simplefilter("ignore", UserWarning)
            from sevenn.calculator import SevenNetCalculator

            return SevenNetCalculator(self.model, device="cpu")


@dataclass(frozen=True)
class Labeller:
    """A named calculator factory: ``name`` goes into dataset metadata and cache keys."""

    name: str
    make: Callable[[], Calculator]
    elements: frozenset[str] | None = None  # None: no declared limit

    def __call__(self) -> Calculator:
        return self.make()


def installed(package: str) -> bool:
    """Whether ``package`` can be imported (without importing it)."""
    return importlib.util.find_spec(package) is not None


def labeller(name: str) -> Labeller:
    """The labeller a name such as ``emt`` or ``sevennet:7net-0`` stands for.

    Unknown names and models are errors that list the known ones; a labeller whose package
    is missing is an ImportError naming the install command.
    """
    family, _, model = name.partition(":")
    if family not in LABELLERS:
        known = ", ".join(f"{f}:{m}" if m else f for f, ms in LABELLERS.items()
                          for m in (ms or ("",)))
        raise ValueError(f"unknown labeller {name!r}; choose one of {known}")
    if family == "emt":
        if model:
            raise ValueError(f"labeller 'emt' takes no model, got {name!r}")
        return Labeller("emt", _emt, EMT_ELEMENTS)
    if model not in LABELLERS[family]:
        raise ValueError(f"unknown {family} model {model!r} in {name!r}; choose one of "
                         f"{', '.join(f'{family}:{m}' for m in LABELLERS[family])}")
    if not installed("sevenn"):
        raise ImportError(f"the labeller {name} needs the 'sevenn' package: {REALISTIC_INSTALL}")
    return Labeller(name, SevenNet(model))
