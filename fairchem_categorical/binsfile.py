"""fit-bins: stream a dataset, propose the support, write the YAML block configs include."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from fairchem_categorical.histogram import HistogramSupport
from fairchem_categorical.targets import BinsFit, EnergyTransform, fit_bins


def iter_structures(paths: Sequence[str | Path], progress: Callable[[str], None] | None = None,
                    ) -> Iterator[tuple[np.ndarray, float, np.ndarray]]:
    """(atomic numbers, energy, forces) of every structure, file by file."""
    from fairchem_categorical.data import read_frames

    for path in paths:
        frames = read_frames([path])
        if progress:
            progress(f"read {len(frames)} structures from {path}")
        for atoms in frames:
            yield (atoms.get_atomic_numbers(), float(atoms.get_potential_energy()),
                   np.asarray(atoms.get_forces()))


def fit_bins_files(paths: Sequence[str | Path], num_bins: int = 128, level: str = "per_atom",
                   margin: float = 0.25, sigma_ratio: float = 0.75,
                   progress: Callable[[str], None] | None = None) -> BinsFit:
    return fit_bins(iter_structures(paths, progress), num_bins=num_bins, level=level,
                    margin=margin, sigma_ratio=sigma_ratio)


def count_clipped(paths: Sequence[str | Path], energy: EnergyTransform,
                  support: HistogramSupport) -> tuple[int, int]:
    """How many structures of ``paths`` the given support would clip, of how many."""
    import torch

    n = clipped = 0
    for z, e, _ in iter_structures(paths):
        y = energy.to_target(e, torch.as_tensor(z))
        clipped += support.count_outside(y)
        n += 1
    return clipped, n


def write_bins(fit: BinsFit, out: str | Path, source: Sequence[str | Path]) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    header = (
        "# Written by `fairchem-categorical fit-bins` from: "
        + ", ".join(str(p) for p in source)
        + "\n# support: energy bins in the binning space "
        "((E - sum refs)/N - mean)/std; force_support: force-magnitude bins (eV/A).\n"
    )
    out.write_text(header + yaml.safe_dump(fit.to_dict(), sort_keys=False))
    return out


def read_bins(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"bins file not found: {path}")
    data = yaml.safe_load(path.read_text())
    missing = {"support", "energy"} - set(data or {})
    if missing:
        raise ValueError(f"{path} is not a fit-bins file: missing {sorted(missing)}")
    return data


ENERGY_HEADS = ("CategoricalEnergyHead", "categorical_energy_head")
FORCE_HEADS = ("CategoricalDirectForceHead", "categorical_direct_force_head")


def _is(module: str, names: tuple[str, ...]) -> bool:
    return module.rsplit(".", 1)[-1] in names


def apply_bins(config: dict[str, Any], bins: dict[str, Any]) -> list[str]:
    """Put a fit-bins result into an OCP-trainer (fairchem 1.10) config; returns where.

    Every categorical head and every dataset with a ``categorical`` block gets it, so the
    heads and the binned targets cannot disagree.
    """
    changed = []
    for name, head in (config.get("model", {}).get("heads") or {}).items():
        module = str(head.get("module", ""))
        if _is(module, ENERGY_HEADS):
            head["support"], head["energy"] = bins["support"], bins["energy"]
            changed.append(f"model.heads.{name}")
        elif _is(module, FORCE_HEADS):
            head["force_support"] = bins["force_support"]
            head["prior_mean"] = bins.get("stats", {}).get("force_mean", head.get("prior_mean"))
            changed.append(f"model.heads.{name}")
    for split, ds in (config.get("dataset") or {}).items():
        if isinstance(ds, dict) and isinstance(ds.get("categorical"), dict):
            cat = ds["categorical"]
            cat["energy"], cat["support"] = bins["energy"], bins["support"]
            if "force_support" in cat:
                cat["force_support"] = bins["force_support"]
            changed.append(f"dataset.{split}.categorical")
    if "categorical_bins" in config:
        config["categorical_bins"] = bins
    if not changed:
        raise ValueError("--bins given, but the config has no categorical heads or binned dataset")
    return changed
