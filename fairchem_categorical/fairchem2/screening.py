"""Screening tools for fairchem-core 2.x: the calculator and the anomaly check of fairchem's
own AdsorbML recipe (``recipes.adsorbml.detect_anomaly``); placements, the adsorbate set and
VASP inputs come from fairchem-data-oc (``fairchem_categorical.ocdata``).

The screening logic is the core's (``fairchem_categorical.screening``); this module only
hands it what fairchem provides.
"""

from __future__ import annotations

from pathlib import Path

from fairchem.core.components.calculate.recipes.adsorbml import detect_anomaly

from fairchem_categorical.fairchem2.calculator import CategoricalCalculator
from fairchem_categorical.ocdata import adsorbate_database, place, write_vasp_inputs
from fairchem_categorical.screening import ScreeningTools

__all__ = ["adsorbate_database", "detect_anomaly", "place", "tools", "write_vasp_inputs"]


def tools(checkpoint: str | Path, device: str = "cpu", task_name: str | None = None,
          seed: int = 41) -> ScreeningTools:
    """The calculator and fairchem's placement and anomaly check, for ``screen``."""
    calc = CategoricalCalculator.from_model_checkpoint(checkpoint, task_name=task_name,
                                                       device=device, seed=seed)
    return ScreeningTools(calculator=calc, place=place, anomalies=detect_anomaly)
