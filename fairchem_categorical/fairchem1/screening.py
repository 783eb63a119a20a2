"""Screening tools for fairchem-core 1.10: the calculator, with fairchem-data-oc's placements,
adsorbate set, VASP inputs and anomaly check (``fairchem_categorical.ocdata``; 1.10 has no
AdsorbML recipe, so the anomaly check is ``DetectTrajAnomaly``'s four checks).

The screening logic is the core's (``fairchem_categorical.screening``); this module only
hands it what fairchem provides.
"""

from __future__ import annotations

from pathlib import Path

from fairchem_categorical.fairchem1.calculator import load_calculator
from fairchem_categorical.ocdata import (
    adsorbate_database,
    detect_anomaly,
    place,
    write_vasp_inputs,
)
from fairchem_categorical.screening import ScreeningTools

__all__ = ["adsorbate_database", "detect_anomaly", "place", "tools", "write_vasp_inputs"]


def tools(checkpoint: str | Path, device: str = "cpu", task_name: str | None = None,
          seed: int = 0) -> ScreeningTools:
    """The calculator and fairchem-data-oc's placement and anomaly check, for ``screen``."""
    del task_name  # 1.10 models have one task
    calc = load_calculator(checkpoint, device=device, seed=seed)
    return ScreeningTools(calculator=calc, place=place, anomalies=detect_anomaly)
