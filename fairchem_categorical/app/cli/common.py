"""What several commands share: printing for a person, and the flags spelled alike."""

from __future__ import annotations

from typing import Any


def say(msg: str) -> None:
    """A line for the person at the terminal, flushed at once (long jobs)."""
    print(msg, flush=True)


#: ``--device`` of the commands that run a model on a device they are told
device_kw: dict[str, Any] = dict(
    default="cpu", help="where the model runs: cpu (default), cuda (the current GPU) or cuda:N")

#: ``--format``: the dataset formats of ``fairchem_categorical.data.FORMATS``
fmt_kw: dict[str, Any] = dict(
    choices=("aselmdb", "pyg-lmdb"), default="aselmdb",
    help="aselmdb: ASE-LMDB for fairchem-core 2.x (default); pyg-lmdb: pickled "
         "torch-geometric LMDB for fairchem-core 1.10 (needs .venv-fairchem1)")

#: ``--fit-temperature`` of calibrate and fit-uncertainty
temperature_flag = ("--fit-temperature",)
temperature_kw: dict[str, Any] = dict(
    action="store_true", default=None,
    help="without a fitted epistemic state, the histogram's temperature is what calibrate "
         "fits (always). With one, the predictive distribution's temperature, the shallow "
         "ensemble's disagreement weight and the epistemic scale are fitted together "
         "anyway, leaving the decoded energies as trained; the flag changes nothing there")


def report_calibration(result: dict) -> None:
    """The fitted temperature / scale and each score before -> after."""
    say(f"temperature {result['temperature']:.4f} (x{result['factor']:.4f} on the "
         "checkpoint's)")
    if "alpha" in result:
        say(f"epistemic scale ({result['method']}) {result['alpha']:.4g} (power "
            f"{result.get('power', 1.0):g}), predictive temperature "
            f"{result.get('predictive_temperature', 1.0):.4g}, disagreement weight "
            f"{result.get('disagreement', 0.0):.4g}")
        if result.get("recalibrated") is False:
            say("no CDF recalibration: fewer than 50 validation structures (intervals from "
                "the fitted scales alone)")
    for key in ("energy_nll", "miscalibration_area", "energy_mae", "energy_nll_uncertainty",
                "miscalibration_area_uncertainty"):
        before, after = result[key + "_before"], result[key + "_after"]
        if before == before or after == after:  # skip metrics that are NaN on both sides
            say(f"{key}: {before:.4f} -> {after:.4f}")
