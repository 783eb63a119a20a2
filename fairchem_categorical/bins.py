"""Bins: fit the energy transform and supports on training data; read and write the file.

``fit_bins`` proposes least-squares element references, the per-atom mean/std and the
energy and force-magnitude supports (observed range widened by ``margin`` per side);
``write_bins``/``read_bins`` are the YAML file configs include (the ``bins`` group on
fairchem-core 2.x, ``train --bins`` on either line).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from fairchem_categorical.histogram import (
    DEFAULT_NUM_BINS,
    DEFAULT_SIGMA_RATIO,
    HistogramSupport,
    SupportSpec,
)
from fairchem_categorical.targets import MAX_Z, EnergyTransform, require_head_level


def fit_element_references(compositions: list[np.ndarray], energies: np.ndarray,
                           ridge: float = 1e-8) -> np.ndarray:
    """Least-squares per-element energies (index = atomic number), as fairchem's linear refs."""
    counts = np.zeros((len(compositions), MAX_Z))
    for row, z in enumerate(compositions):
        if len(z) and int(np.max(z)) >= MAX_Z:
            raise ValueError(f"structure {row}: atomic number {int(np.max(z))} >= {MAX_Z}")
        np.add.at(counts[row], np.asarray(z, dtype=int), 1.0)
    present = counts.sum(0) > 0
    a = counts[:, present]
    coef = np.linalg.solve(a.T @ a + ridge * np.eye(a.shape[1]), a.T @ energies)
    refs = np.zeros(MAX_Z)
    refs[present] = coef
    return refs


@dataclass
class BinsFit:
    """What ``fit-bins`` proposes: energy transform, energy support, force support."""

    energy: EnergyTransform
    support: SupportSpec
    force_support: SupportSpec
    num_structures: int
    target_range: tuple[float, float]
    force_max: float
    force_mean: float = 1.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "energy": self.energy.to_dict(),
            "support": self.support.to_dict(),
            "force_support": self.force_support.to_dict(),
            "stats": {
                "num_structures": self.num_structures,
                "target_min": self.target_range[0],
                "target_max": self.target_range[1],
                "force_max": self.force_max,
                "force_mean": self.force_mean,
            },
        }


class _Pass:
    """Sums over one pass of the structures, of constant size at any dataset size."""

    def __init__(self) -> None:
        self.n = 0
        self.ata = np.zeros((MAX_Z, MAX_Z))  # normal equations of the references' fit
        self.atb = np.zeros(MAX_Z)
        self.present = np.zeros(MAX_Z, dtype=bool)
        self.fmax = self.fsum = 0.0
        self.fcount = 0
        # Welford's running mean / M2, and the range, of the referenced per-atom energies
        self.mean = self.m2 = 0.0
        self.lo, self.hi = np.inf, -np.inf

    def add(self, i: int, z: np.ndarray, energy: float, forces: np.ndarray | None,
            refs: np.ndarray | None) -> None:
        if len(z) == 0:
            raise ValueError(f"structure {i}: no atoms")
        if not np.isfinite(energy):
            raise ValueError(f"structure {i}: energy is not finite ({energy})")
        if int(np.max(z)) >= MAX_Z:
            raise ValueError(f"structure {i}: atomic number {int(np.max(z))} >= {MAX_Z}")
        self.n += 1
        if refs is None:  # first pass of a fit with references: their normal equations
            counts = np.bincount(z, minlength=MAX_Z).astype(float)
            self.ata += np.outer(counts, counts)
            self.atb += counts * energy
            self.present[z] = True
            if forces is not None:
                forces = np.asarray(forces, dtype=float)
                if not np.isfinite(forces).all():
                    raise ValueError(f"structure {i}: forces contain NaN or inf")
                if forces.size:
                    norms = np.linalg.norm(forces, axis=-1)
                    self.fmax = max(self.fmax, float(norms.max()))
                    self.fsum, self.fcount = self.fsum + float(norms.sum()), \
                        self.fcount + norms.size
            return
        value = (energy - float(refs[z].sum())) / len(z)  # per-atom level
        delta = value - self.mean
        self.mean += delta / self.n
        self.m2 += delta * (value - self.mean)
        self.lo, self.hi = min(self.lo, value), max(self.hi, value)


def fit_bins(
    structures: Iterable[tuple[np.ndarray, float, np.ndarray | None]],
    num_bins: int = DEFAULT_NUM_BINS,
    level: str = "per_atom",
    margin: float = 0.25,
    sigma_ratio: float = DEFAULT_SIGMA_RATIO,
    fit_references: bool = True,
    references: Sequence[float] | None = None,
) -> BinsFit:
    """Propose references, normalisation and supports from (Z, energy, forces) triples.

    ``margin`` widens each support by that fraction of the observed range on each
    side, so a test structure slightly beyond the training range still decodes.
    ``references``: element references to keep (index = atomic number; e.g. fairchem's
    fitted ones, ``read_fairchem_references``) instead of fitting them.

    Memory does not grow with the data: two passes over ``structures`` (references and
    force statistics, then the referenced energies' mean, spread and range) keep only
    sums. A re-iterable (``fit_bins_files``'s) is streamed twice; a one-shot iterator is
    held in memory first.
    """
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    require_head_level(level, "fit-bins")
    if iter(structures) is structures:  # a one-shot iterator: a second pass needs a copy
        structures = list(structures)
    first = _Pass()
    for i, (z, energy, forces) in enumerate(structures):
        first.add(i, np.asarray(z, dtype=int), float(energy), forces, None)
    if not first.n:
        raise ValueError("cannot fit bins on an empty dataset (no structures)")
    refs = np.zeros(MAX_Z)
    if references is not None:
        refs[:] = _references(references)
    elif fit_references:
        p = first.present
        a = first.ata[np.ix_(p, p)]
        refs[p] = np.linalg.solve(a + 1e-8 * np.eye(a.shape[1]), first.atb[p])
    second = _Pass()
    for i, (z, energy, forces) in enumerate(structures):
        second.add(i, np.asarray(z, dtype=int), float(energy), forces, refs)
    if second.n != first.n:
        raise ValueError(f"the data changed between fit-bins' two passes ({first.n} then "
                         f"{second.n} structures)")
    mean = second.mean
    std = float(np.sqrt(second.m2 / second.n)) if second.n > 1 else 1.0
    if not std > 1e-12:
        std = 1.0
    # the elements the references were fitted on: predict and the calculator flag others
    elements = [int(z) for z in np.flatnonzero(first.present)]
    transform = EnergyTransform(element_references=refs.tolist(), mean=mean, std=std,
                                level=level, elements=elements)
    lo, hi = (second.lo - mean) / std, (second.hi - mean) / std
    span = max(hi - lo, 1.0)
    support = SupportSpec(low=lo - margin * span, high=hi + margin * span, num_bins=num_bins,
                          sigma_ratio=sigma_ratio)
    force_high = max(first.fmax, 1e-3) * (1.0 + margin)
    # symmetric: the direct-force head decodes a signed amplitude, so |F| = 0 decodes to 0
    # (on [0, F_max] small forces come out biased up; see readout.ForceMagnitudeReadout)
    force_support = SupportSpec(low=-force_high, high=force_high, num_bins=num_bins,
                                sigma_ratio=sigma_ratio)
    return BinsFit(energy=transform, support=support, force_support=force_support,
                   num_structures=first.n, target_range=(lo, hi), force_max=first.fmax,
                   force_mean=first.fsum / first.fcount if first.fcount else 1.0)


def _references(values: Sequence[float]) -> np.ndarray:
    refs = np.asarray(values, dtype=float).reshape(-1)
    if len(refs) > MAX_Z and np.any(refs[MAX_Z:] != 0):
        raise ValueError(f"element references beyond Z = {MAX_Z - 1} are not supported")
    if not np.isfinite(refs).all():
        raise ValueError("element references contain NaN or inf")
    out = np.zeros(MAX_Z)
    out[:min(len(refs), MAX_Z)] = refs[:MAX_Z]
    return out


class _Structures:
    """The (Z, energy, forces) of data files, re-iterable: each pass reads them again."""

    def __init__(self, paths: Sequence[str | Path],
                 progress: Callable[[str], None] | None) -> None:
        self.paths, self.progress, self.passes = list(paths), progress, 0

    def __iter__(self) -> Iterator[tuple[np.ndarray, float, np.ndarray]]:
        self.passes += 1
        return iter_structures(self.paths, self.progress if self.passes == 1 else None)


def iter_structures(paths: Sequence[str | Path], progress: Callable[[str], None] | None = None,
                    ) -> Iterator[tuple[np.ndarray, float, np.ndarray]]:
    """(atomic numbers, energy, forces) of every structure, streamed file by file."""
    from fairchem_categorical.data.formats import iter_frames

    for path in paths:
        n = 0
        for atoms in iter_frames([path]):
            n += 1
            yield (atoms.get_atomic_numbers(), float(atoms.get_potential_energy()),
                   np.asarray(atoms.get_forces()))
        if progress:
            progress(f"read {n} structures from {path}")


def fit_bins_files(paths: Sequence[str | Path], num_bins: int = 128, level: str = "per_atom",
                   margin: float = 0.25, sigma_ratio: float = 0.75,
                   progress: Callable[[str], None] | None = None,
                   references: Sequence[float] | None = None) -> BinsFit:
    """``fit_bins`` streamed over data files (constant memory, two passes)."""
    return fit_bins(_Structures(paths, progress), num_bins=num_bins, level=level,
                    margin=margin, sigma_ratio=sigma_ratio, references=references)


def read_fairchem_references(path: str | Path, target: str = "energy") -> np.ndarray:
    """Element references fairchem fitted, to reuse instead of refitting (index = Z).

    Reads what fairchem's ``create_element_references(file=...)`` reads (a ``.pt`` state
    dict or an ``.npz`` with ``element_references`` or legacy ``coeff``) and a fairchem
    1.10 trainer checkpoint (its ``elementrefs[target]``), without importing fairchem.
    A normalizer is not taken: fairchem's normalises total energies, the bins normalise
    per-atom referenced energies, so fit-bins fits their mean and std itself.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--from-fairchem {path}: no such file")
    if path.suffix == ".npz":
        try:
            with np.load(path) as values:
                key = "coeff" if "coeff" in values else "element_references"
                if key not in values:
                    raise ValueError(f"--from-fairchem {path}: an .npz without "
                                     f"'element_references' (or 'coeff'); it holds "
                                     f"{sorted(values)}")
                return _references(values[key])
        except (OSError, EOFError) as err:
            raise ValueError(f"--from-fairchem {path}: not a readable .npz ({err})") from err
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a pickle of fairchem classes, or not torch's at all
        raise ValueError(
            f"--from-fairchem {path}: not an element-references file (.pt state dict or "
            ".npz) nor a fairchem 1.10 trainer checkpoint ({type(err).__name__}); for a "
            "fairchem-core 2.x checkpoint, give the element references file its config's "
            "element_refs names") from err
    if isinstance(state, dict) and isinstance(state.get("elementrefs"), dict):
        refs = state["elementrefs"].get(target)
        if refs is None:
            raise ValueError(f"--from-fairchem {path}: the checkpoint has element references "
                             f"for {sorted(state['elementrefs'])}, not {target!r}")
        state = refs
    if not isinstance(state, dict) or "element_references" not in state:
        found = sorted(state) if isinstance(state, dict) else type(state).__name__
        raise ValueError(f"--from-fairchem {path}: no 'element_references' in it (found "
                         f"{found}); expected fairchem's element references file or a "
                         "fairchem 1.10 checkpoint fitted with them")
    return _references(torch.as_tensor(state["element_references"]).double().numpy())


def count_clipped(paths: Sequence[str | Path], energy: EnergyTransform,
                  support: HistogramSupport) -> tuple[int, int]:
    """How many structures of ``paths`` the given support would clip, of how many."""
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
        "((E - sum refs)/N - mean)/std; force_support: force-magnitude bins (eV/A),\n"
        "# symmetric: the direct-force head decodes a signed amplitude.\n"
    )
    out.write_text(header + yaml.safe_dump(fit.to_dict(), sort_keys=False))
    return out


def read_bins(path: str | Path) -> dict[str, Any]:
    """A fit-bins file, checked: every field builds (transform, supports) or the error says
    which file and what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"bins file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: not valid YAML ({err})") from err
    if not isinstance(data, dict):
        raise ValueError(f"{path} is not a fit-bins file: expected a mapping with 'energy' and "
                         f"'support', found a {type(data).__name__}")
    missing = {"support", "energy"} - set(data)
    if missing:
        raise ValueError(f"{path} is not a fit-bins file: missing {sorted(missing)}")
    for key, build in (("energy", EnergyTransform), ("support", SupportSpec),
                       ("force_support", SupportSpec)):
        if key not in data:
            continue
        if not isinstance(data[key], dict):
            raise ValueError(f"{path}: '{key}' must be a mapping, found "
                             f"{type(data[key]).__name__}")
        try:
            build(**data[key])
        except (TypeError, ValueError) as err:
            raise ValueError(f"{path}: bad '{key}' block ({err})") from err
    require_head_level(data["energy"].get("level", "per_atom"), f"{path}")
    return data


def describe(fit: BinsFit) -> str:
    """What a fit proposes, in two lines a person reads (fit-bins prints them)."""
    lo, hi = fit.target_range
    s, et = fit.support, fit.energy
    per = "/atom" if et.level == "per_atom" else ""
    return (
        f"{fit.num_structures} structures; {et.level} targets span [{lo:.4f}, {hi:.4f}] "
        f"(normalised; mean {et.mean:.5f} eV{per}, std {et.std:.5f} eV{per})\n"
        f"energy support: [{s.low:.4f}, {s.high:.4f}], {s.num_bins} bins of "
        f"{s.width:.4f} ({s.width * et.std:.5f} eV{per}); force support: "
        f"[{fit.force_support.low:.3f}, {fit.force_support.high:.3f}] eV/A, signed "
        f"(max |F| {fit.force_max:.3f})"
    )
