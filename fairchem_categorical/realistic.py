"""The realistic dataset: OC20-like adsorbate+slab frames labelled by a universal potential.

Systems are built the way OC20's were, with fairchem-data-oc's own tools (``ocdata``):
a bulk (elements and ordered intermetallics, ``data.bulks``), one of its surfaces
enumerated by ``compute_slabs`` and tiled and tagged by its ``Slab`` tools, an adsorbate
from its adsorbate database, placed by ``AdsorbateSlabConfig``; tags 0/1/2 and the tag-0
atoms fixed. The labeller (``data.labellers``; ``sevennet:7net-0`` by default) relaxes
each system and labels snapshots along the relaxation and small rattles of them; frames
with overlapping atoms are dropped and counted. Work is cached per system, so a killed
run resumes, and spread over one worker per core.

Splits are by system; the out-of-distribution splits each change one thing.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from dataclasses import fields as dataclass_fields
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator

from fairchem_categorical import ocdata
from fairchem_categorical.data.bulks import (
    BULKS,
    OOD_BULKS,
    bulk_atoms,
    bulk_elements,
    fit_volume,
)
from fairchem_categorical.data.embedded import split_paths, write_by_system
from fairchem_categorical.data.labellers import Labeller, labeller
from fairchem_categorical.data.resumable import default_workers, run_resumable
from fairchem_categorical.data.sampling import has_overlap, relax_and_rattle
from fairchem_categorical.screening import AdsorbateSpec

__all__ = ["DEFAULT_LABELLER", "REALISTIC_OOD_SPLITS", "SystemRecipe", "adsorbate_names",
           "generate_realistic_frames", "make_realistic_dataset",
           "make_realistic_ood_datasets"]

DEFAULT_LABELLER = "sevennet:7net-0"
FACET_KINDS = ("low", "high")  # max |Miller index| 1 (OC20's usual surfaces) or 2 (steps)
_MANIFEST = "realistic.json"


def adsorbate_names(kind: str = "seen") -> tuple[str, ...]:
    """fairchem-data-oc's adsorbates by SMILES: ``seen`` holds those with at most one
    carbon atom, ``unseen`` the two-carbon ones (the same elements, C H O N)."""
    if kind not in ("seen", "unseen"):
        raise ValueError(f"adsorbate kind must be 'seen' or 'unseen', got {kind!r}")
    db = ocdata.adsorbate_database()
    two_carbon = {s for s, (a, _) in db.items() if a.get_chemical_symbols().count("C") >= 2}
    return tuple(s for s in db if (s in two_carbon) == (kind == "unseen"))


#: Out-of-distribution splits relative to the in-distribution set: each changes one thing.
REALISTIC_OOD_SPLITS: dict[str, dict[str, Any]] = {
    "adsorbates": {"adsorbates": "unseen"},          # two-carbon adsorbates, seen elements
    "elements": {"bulks": OOD_BULKS},                # bulks holding Ru, Mo or Ti
    "facets": {"facets": "high"},                    # surfaces with a Miller index of 2
    "hot": {"rattle_scale": 3.0, "kinds": ("rattle",)},  # rattles 3x hotter
}


@dataclass(frozen=True)
class SystemRecipe:
    """How system ``sid`` is built and labelled; calling it gives its frames and counts.

    Picklable, so worker processes run it; everything that changes a system's frames is
    a field (and so part of the cache key) except the labeller's code itself.
    """

    seed: int
    labeller: Labeller
    bulks: tuple[str, ...] = BULKS
    adsorbates: str | tuple[str, ...] = "seen"
    facets: str = "low"
    frames_per_system: int = 6
    rattle_scale: float = 1.0
    kinds: tuple[str, ...] = ("relax", "rattle")
    min_ab: float = 8.0
    max_steps: int = 30
    fmax: float = 0.05
    mode: str = "random_site_heuristic_placement"

    def key(self) -> str:
        """A short hash of every field that shapes the frames (the cache folder's name)."""
        fields = {f.name: getattr(self, f.name) for f in dataclass_fields(self)}
        fields["labeller"] = self.labeller.name
        fields["version"] = 1
        text = json.dumps(fields, sort_keys=True, default=list)
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def calculator(self) -> Calculator:
        """The labeller's calculator, built once per process (a worker runs many systems)."""
        if self.labeller.name not in _CALCULATORS:
            _CALCULATORS[self.labeller.name] = self.labeller()
        return _CALCULATORS[self.labeller.name]

    def build(self, sid: int) -> tuple[Atoms, dict[str, Any], np.random.Generator]:
        """System ``sid``'s placement (tags 0/1/2, tag-0 atoms fixed) and its metadata."""
        rng = np.random.default_rng([self.seed, sid])
        names = (adsorbate_names(self.adsorbates) if isinstance(self.adsorbates, str)
                 else self.adsorbates)
        bulk_name = str(self.bulks[rng.integers(len(self.bulks))])
        bulk = _relaxed_bulk(bulk_name, self.labeller.name, self.calculator())
        millers = [m for m in ocdata.distinct_millers(bulk, 1 if self.facets == "low" else 2)
                   if (max(abs(i) for i in m) > 1) == (self.facets == "high")]
        miller = millers[rng.integers(len(millers))]
        terminations = ocdata.slabs(bulk, miller, min_ab=self.min_ab)
        slab = terminations[rng.integers(len(terminations))]
        smiles = str(names[rng.integers(len(names))])
        ads_atoms, binding = ocdata.adsorbate_database()[smiles]
        placed = ocdata.place(slab, AdsorbateSpec(smiles, ads_atoms, binding), 1, self.mode,
                              seed=int(rng.integers(2**31)))[0]
        atoms = ocdata.fix_subsurface(placed)
        meta = {"metal": bulk_name, "bulk": bulk_name,
                "facet": "".join(str(i) for i in miller), "miller": list(miller),
                "adsorbate": smiles, "labeller": self.labeller.name}
        return atoms, meta, rng

    def __call__(self, sid: int) -> dict[str, Any]:
        """Frames of system ``sid`` (overlapping ones dropped) and what it cost."""
        start = time.perf_counter()
        atoms, meta, rng = self.build(sid)
        frames = relax_and_rattle(atoms, self.calculator(), rng, self.frames_per_system,
                                  {"sid": sid, **meta}, rattle_scale=self.rattle_scale,
                                  max_steps=self.max_steps, fmax=self.fmax)
        frames = [f for f in frames if f.info["kind"] in self.kinds]
        kept = [f for f in frames if not has_overlap(f)]
        return {"frames": kept, "overlapping": len(frames) - len(kept),
                "natoms": len(atoms), "seconds": time.perf_counter() - start}


_CALCULATORS: dict[str, Calculator] = {}
_BULK_CACHE: dict[tuple[str, str], Atoms] = {}


def _relaxed_bulk(name: str, labeller_name: str, calc: Calculator) -> Atoms:
    """Bulk ``name`` at the labeller's equilibrium volume (once per process)."""
    if (name, labeller_name) not in _BULK_CACHE:
        _BULK_CACHE[name, labeller_name] = fit_volume(bulk_atoms(name), calc)
    return _BULK_CACHE[name, labeller_name].copy()


def _as_labeller(spec: str | Labeller | Callable[[], Calculator]) -> Labeller:
    if isinstance(spec, Labeller):
        return spec
    if isinstance(spec, str):
        return labeller(spec)
    if callable(spec):  # any ASE calculator factory (picklable for workers > 1)
        return Labeller(getattr(spec, "__qualname__", type(spec).__name__), spec)
    raise TypeError(f"labeller must be a name, a Labeller or a calculator factory, got {spec!r}")


def generate_realistic_frames(
    n_systems: int,
    cache_dir: str | Path,
    seed: int = 0,
    labeller: str | Labeller | Callable[[], Calculator] = DEFAULT_LABELLER,
    *,
    workers: int | None = None,
    desc: str = "labelling",
    first: int = 0,
    **recipe: Any,
) -> tuple[list[Atoms], dict[str, Any]]:
    """Frames of systems ``first..n_systems-1`` and a summary (counts, dropped overlaps,
    cost).

    ``recipe`` takes :class:`SystemRecipe`'s fields (``bulks``, ``adsorbates``, ``facets``,
    ``frames_per_system``, ``rattle_scale``, ``kinds``, ``min_ab``, ...). Finished systems
    are cached under ``cache_dir/<recipe key>/``; system ``sid`` depends only on
    ``(seed, sid)`` and the recipe, so a smaller ``n_systems`` is a prefix of a larger one.
    """
    if n_systems < 1:
        raise ValueError(f"n_systems must be >= 1, got {n_systems}")
    if not 0 <= first < n_systems:
        raise ValueError(f"need 0 <= first < n_systems, got first={first}, "
                         f"n_systems={n_systems}")
    frames_per_system = recipe.get("frames_per_system", 6)
    if frames_per_system < 1:
        raise ValueError(f"frames_per_system must be >= 1, got {frames_per_system}")
    rattle = recipe.get("rattle_scale", 1.0)
    if not (rattle >= 0 and math.isfinite(rattle)):
        raise ValueError(f"rattle_scale must be a finite number >= 0, got {rattle}")
    if recipe.get("facets", "low") not in FACET_KINDS:
        raise ValueError(f"facets must be one of {FACET_KINDS}, got {recipe['facets']!r}")
    for name in recipe.get("bulks", ()):
        bulk_atoms(name)  # unknown names fail before any work
    kinds = tuple(recipe.pop("kinds", ("relax", "rattle")))
    if not kinds or set(kinds) - {"relax", "rattle"}:
        raise ValueError(f"kinds must be a non-empty subset of ('relax', 'rattle'), got {kinds}")
    for key in ("bulks", "adsorbates"):
        if key in recipe and not isinstance(recipe[key], str):
            recipe[key] = tuple(recipe[key])
    system = SystemRecipe(seed=seed, labeller=_as_labeller(labeller), kinds=kinds, **recipe)
    known = system.labeller.elements
    beyond = [b for b in system.bulks if known is not None and bulk_elements(b) - known]
    if beyond:
        raise ValueError(f"the labeller {system.labeller.name} has no parameters for the "
                         f"elements of the bulks {', '.join(beyond)}; pass bulks= of "
                         f"{', '.join(sorted(known))} alone")
    results = run_resumable(system, range(first, n_systems), Path(cache_dir) / system.key(),
                            workers=default_workers() if workers is None else workers,
                            desc=desc)
    frames = [f for r in results.values() for f in r["frames"]]
    seconds = [r["seconds"] for r in results.values()]
    natoms = [r["natoms"] for r in results.values()]
    summary = {"labeller": system.labeller.name, "seed": seed, "systems": len(results),
               "frames": len(frames), "dropped_overlapping": sum(
                   r["overlapping"] for r in results.values()),
               "atoms_per_system": {"min": min(natoms), "mean": float(np.mean(natoms)),
                                    "max": max(natoms)},
               "seconds_per_system": float(np.mean(seconds)),
               "seconds_per_frame": float(sum(seconds) / max(1, len(frames))),
               "recipe_key": system.key()}
    return frames, summary


def make_realistic_dataset(
    out_dir: str | Path,
    n_systems: int = 24,
    seed: int = 0,
    labeller: str | Labeller | Callable[[], Calculator] = DEFAULT_LABELLER,
    splits: dict[str, float] | None = None,
    progress: Callable[[str], None] | None = None,
    overwrite: bool = False,
    *,
    fmt: str = "aselmdb",
    workers: int | None = None,
    **recipe: Any,
) -> dict[str, Path]:
    """The realistic dataset: ``out_dir/<split>/`` folders (train/val/test by system; the
    first split, train, holds every element of the others).

    Cached per system under ``out_dir/.cache`` (a re-run after a kill resumes); the
    summary (labeller, frames, dropped overlapping frames, seconds per system and per
    frame of one worker) goes to ``out_dir/realistic.json`` under the split names.
    """
    labeller = _as_labeller(labeller)  # an unknown name or a missing extra fails first
    paths = split_paths(out_dir, n_systems, splits, fmt, overwrite)
    frames, summary = generate_realistic_frames(
        n_systems, Path(out_dir) / ".cache", seed, labeller, workers=workers,
        desc=f"labelling {', '.join(paths)}", **recipe)
    if progress is not None:
        progress(f"{summary['frames']} frames of {n_systems} systems "
                 f"({summary['dropped_overlapping']} with overlapping atoms dropped; "
                 f"{summary['seconds_per_system']:.1f} s per system)")
    folders = write_by_system(frames, n_systems, seed, paths, fmt, overwrite, progress,
                              cover_elements=True)
    _record(Path(out_dir), {", ".join(folders): summary})
    return folders


def make_realistic_ood_datasets(
    out_dir: str | Path,
    n_systems: int = 8,
    seed: int = 1000,
    labeller: str | Labeller | Callable[[], Calculator] = DEFAULT_LABELLER,
    splits: Sequence[str] = tuple(REALISTIC_OOD_SPLITS),
    progress: Callable[[str], None] | None = None,
    overwrite: bool = False,
    *,
    fmt: str = "aselmdb",
    workers: int | None = None,
    **recipe: Any,
) -> dict[str, Path]:
    """One folder per split of :data:`REALISTIC_OOD_SPLITS` (``out_dir/<name>``), on
    systems of their own seed; ``recipe`` applies to every split (e.g. ``min_ab``)."""
    unknown = [s for s in splits if s not in REALISTIC_OOD_SPLITS]
    if unknown:
        raise ValueError(f"unknown OOD splits {unknown}; choose from "
                         f"{tuple(REALISTIC_OOD_SPLITS)}")
    out: dict[str, Path] = {}
    for i, name in enumerate(splits):
        out[name] = make_realistic_dataset(
            out_dir, n_systems, seed + i, labeller, {name: 1.0}, progress, overwrite,
            fmt=fmt, workers=workers, **{**recipe, **REALISTIC_OOD_SPLITS[name]})[name]
    return out


def _record(out_dir: Path, entries: dict[str, Any]) -> None:
    """Merge ``entries`` into ``out_dir/realistic.json``."""
    path = out_dir / _MANIFEST
    data = json.loads(path.read_text()) if path.exists() else {}
    data.update(entries)
    path.write_text(json.dumps(data, indent=1) + "\n")
