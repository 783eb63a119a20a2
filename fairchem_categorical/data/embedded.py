"""The embedded default dataset: OC20-style adsorbate+slab frames labelled by ASE's EMT.

Everything downstream (fit-bins, training on either fairchem line, prediction) can be
exercised on a CPU in seconds without downloading anything: adsorbates on fcc metal
slabs, tags 0/1/2, fixed bottom layers, frames sampled along short LBFGS relaxations
and small rattles, split by system into dataset folders of either format.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms
from ase.build import add_adsorbate, fcc100, fcc111, fcc211
from ase.calculators.emt import EMT
from ase.constraints import FixAtoms

from fairchem_categorical.data.common import check_one_dataset, format_suffix
from fairchem_categorical.data.formats import writer
from fairchem_categorical.data.sampling import relax_and_rattle

__all__ = ["ADSORBATES", "DEFAULT_ADSORBATES", "DEFAULT_FACETS", "DEFAULT_METALS",
           "DEFAULT_SPLITS", "EMT_METALS", "FACETS", "OOD_SPLITS", "generate_frames",
           "make_dataset", "make_ood_datasets", "split_paths", "write_by_system"]

#: fcc metals EMT has parameters for (EMT also knows H, C, N, O, used for adsorbates).
EMT_METALS = ("Cu", "Pt", "Ni", "Pd", "Ag", "Au", "Al")

#: Adsorbates as (symbols, z-offsets in Å relative to the binding atom); index 0 binds.
ADSORBATES: dict[str, tuple[tuple[str, ...], tuple[float, ...]]] = {
    "H": (("H",), (0.0,)),
    "O": (("O",), (0.0,)),
    "N": (("N",), (0.0,)),
    "C": (("C",), (0.0,)),
    "OH": (("O", "H"), (0.0, 0.97)),
    "CO": (("C", "O"), (0.0, 1.15)),
    "NH": (("N", "H"), (0.0, 1.03)),
    "CH": (("C", "H"), (0.0, 1.09)),
    "NO": (("N", "O"), (0.0, 1.16)),
    # not in the default set: molecules of the same elements for an unseen-adsorbate split
    "N2": (("N", "N"), (0.0, 1.10)),
    "O2": (("O", "O"), (0.0, 1.21)),
    "CN": (("C", "N"), (0.0, 1.17)),
    "COH": (("C", "O", "H"), (0.0, 1.32, 2.29)),
}

#: What the embedded default draws from (the training distribution of the demo and tests).
DEFAULT_METALS = ("Cu", "Pt", "Ni", "Pd", "Ag", "Au")
DEFAULT_ADSORBATES = ("H", "O", "N", "C", "OH", "CO", "NH", "CH", "NO")
DEFAULT_FACETS = ("fcc111", "fcc100")

#: Default split fractions for :func:`make_dataset`.
DEFAULT_SPLITS: dict[str, float] = {"train": 0.7, "val": 0.15, "test": 0.15}

_FACETS: dict[str, tuple[Callable[..., Atoms], tuple[str, ...]]] = {
    "fcc111": (fcc111, ("ontop", "bridge", "fcc", "hcp")),
    "fcc100": (fcc100, ("ontop", "bridge", "hollow")),
    # stepped: ase names no sites and tags no layers; the adsorbate goes near a step atom
    "fcc211": (fcc211, ()),
}
FACETS = tuple(_FACETS)

#: Out-of-distribution splits relative to the defaults: each changes one thing.
OOD_SPLITS: dict[str, dict[str, Any]] = {
    "adsorbates": {"adsorbates": ("N2", "O2", "CN", "COH")},   # unseen molecules, seen elements
    "metal": {"metals": ("Al",)},                               # an element absent from training
    "facet": {"facets": ("fcc211",)},                           # steps
    "hot": {"rattle_scale": 3.0, "kinds": ("rattle",)},         # rattles 3x hotter
}
# (nx, ny, layers, fixed bottom layers): 16-36 slab atoms, so 17-38 atoms with the adsorbate.
_SLAB_SIZES: tuple[tuple[int, int, int, int], ...] = (
    (2, 2, 4, 2),
    (3, 3, 3, 1),
    (3, 3, 4, 2),
)
_MAX_RELAX_STEPS = 40  # relaxations are for frame diversity, not converged minima
_FMAX = 0.05


# --------------------------------------------------------------------------------------------
# Generation
# --------------------------------------------------------------------------------------------


def _build_system(
    rng: np.random.Generator,
    metals: Sequence[str],
    adsorbates: Sequence[str],
    facets: Sequence[str] = DEFAULT_FACETS,
) -> tuple[Atoms, dict[str, str]]:
    """Build one randomised adsorbate+slab system with OC20 tags and fixed bottom layers."""
    metal = str(metals[rng.integers(len(metals))])
    facet = str(facets[rng.integers(len(facets))])
    ads_name = str(adsorbates[rng.integers(len(adsorbates))])
    nx, ny, nlayers, nfixed = _SLAB_SIZES[rng.integers(len(_SLAB_SIZES))]
    vacuum = float(rng.uniform(6.0, 8.0))
    builder, sites = _FACETS[facet]

    if facet == "fcc211":
        nx = 3  # one step per cell along x (ase requires a multiple of 3)
        slab = builder(metal, size=(nx, ny, nlayers), vacuum=vacuum)
        # no layer tags: fix the lowest nfixed/nlayers of the atoms by height
        rank = np.argsort(np.argsort(slab.positions[:, 2], kind="stable"), kind="stable")
        slab_tags = np.where(rank < len(slab) * nfixed // nlayers, 0, 1)
        top = np.flatnonzero(slab.positions[:, 2] >= slab.positions[:, 2].max() - 0.1)
        site = "step"
        xy = slab.positions[top[rng.integers(len(top))], :2] + rng.normal(0.0, 0.4, size=2)
    else:
        slab = builder(metal, size=(nx, ny, nlayers), vacuum=vacuum)
        # ase.build tags layers 1 (top) .. nlayers (bottom); remap to OC20: 0 fixed, 1 surface
        layer = slab.get_tags()
        slab_tags = np.where(layer > nlayers - nfixed, 0, 1)

        site = sites[rng.integers(len(sites))]
        info = slab.info["adsorbate_info"]
        cell_offset = np.array([rng.integers(nx), rng.integers(ny)], dtype=float)
        xy = (np.asarray(info["sites"][site]) + cell_offset) @ np.asarray(info["cell"])
        xy = xy + rng.normal(0.0, 0.15, size=2)  # lateral jitter so sites are not all identical
    height = float(rng.uniform(1.5, 2.0))

    symbols, dz = ADSORBATES[ads_name]
    ads = Atoms(symbols, positions=[(0.0, 0.0, z) for z in dz])
    add_adsorbate(slab, ads, height, position=tuple(xy), mol_index=0)

    tags = np.concatenate([slab_tags, np.full(len(ads), 2)])
    atoms = Atoms(
        slab.get_chemical_symbols(),
        positions=slab.get_positions(),
        cell=slab.get_cell(),
        pbc=True,
        tags=tags,
    )
    # Re-centre so there is `vacuum` on both sides including the adsorbate.
    atoms.center(vacuum=vacuum, axis=2)
    atoms.set_constraint(FixAtoms(indices=np.flatnonzero(tags == 0)))

    free = tags != 0
    atoms.positions[free] += rng.normal(0.0, 0.05, size=(int(free.sum()), 3))
    meta = {"metal": metal, "facet": facet, "adsorbate": ads_name, "site": site}
    return atoms, meta


def _system_frames(
    sid: int,
    seed: int,
    frames_per_system: int,
    metals: Sequence[str],
    adsorbates: Sequence[str],
    rattle_scale: float,
    facets: Sequence[str] = DEFAULT_FACETS,
) -> list[Atoms]:
    """All frames of one system; its own RNG stream makes it independent of n_systems."""
    rng = np.random.default_rng([seed, sid])
    atoms, meta = _build_system(rng, metals, adsorbates, facets)
    return relax_and_rattle(atoms, EMT(), rng, frames_per_system, {"sid": sid, **meta},
                            rattle_scale=rattle_scale, max_steps=_MAX_RELAX_STEPS, fmax=_FMAX)


def generate_frames(
    n_systems: int = 24,
    seed: int = 0,
    frames_per_system: int = 6,
    metals: Sequence[str] = DEFAULT_METALS,
    adsorbates: Sequence[str] = DEFAULT_ADSORBATES,
    progress: Callable[[str], None] | None = None,
    rattle_scale: float = 1.0,
    facets: Sequence[str] = DEFAULT_FACETS,
    kinds: Sequence[str] = ("relax", "rattle"),
) -> list[Atoms]:
    """Generate the embedded OC20-style adsorbate+slab dataset, labelled with EMT.

    Each system (index ``sid``) gets a random metal, facet (fcc111/fcc100), slab size,
    adsorbate, site, height and initial rattle, then ``frames_per_system`` frames: about half
    are snapshots spread along a short (L)BFGS relaxation, the rest are rattles (stdev
    0.02-0.1 Å times ``rattle_scale``) of random snapshots. Raising ``rattle_scale`` gives
    hotter, out-of-distribution geometries. Only free (tag != 0) atoms move, as in OC20.
    ``facets`` may add ``fcc211`` (steps; fixed atoms chosen by height); ``kinds`` keeps
    only some frame kinds (``("rattle",)`` for a split of hot rattles alone).

    Frames carry a SinglePointCalculator with the EMT energy and the *unconstrained* forces
    (fixed atoms keep their physical forces; use ``atoms.calc.results["forces"]`` or
    ``get_forces(apply_constraint=False)``), tags 0/1/2, FixAtoms on the tag-0 atoms,
    ``pbc=True`` and ``info`` with ``sid``, ``fid``, ``metal``, ``facet``, ``adsorbate``.

    System ``sid`` only depends on ``(seed, sid)``, so a smaller ``n_systems`` yields a prefix
    of a larger one.
    """
    if n_systems < 1:
        raise ValueError(f"n_systems must be >= 1, got {n_systems}")
    if frames_per_system < 1:
        raise ValueError(f"frames_per_system must be >= 1, got {frames_per_system}")
    if not (rattle_scale >= 0 and math.isfinite(rattle_scale)):
        raise ValueError(f"rattle_scale must be a finite number >= 0, got {rattle_scale}")
    if not metals or not adsorbates or not facets:
        raise ValueError("metals, adsorbates and facets must not be empty")
    bad_facets = [f for f in facets if f not in _FACETS]
    if bad_facets:
        raise ValueError(f"unknown facets {bad_facets}; choose from {FACETS}")
    bad_kinds = set(kinds) - {"relax", "rattle"}
    if bad_kinds or not kinds:
        raise ValueError(f"kinds must be a non-empty subset of ('relax', 'rattle'), got {kinds}")
    bad_metals = [m for m in metals if m not in EMT_METALS]
    if bad_metals:
        raise ValueError(f"metals {bad_metals} not supported by EMT; choose from {EMT_METALS}")
    bad_ads = [a for a in adsorbates if a not in ADSORBATES]
    if bad_ads:
        raise ValueError(f"unknown adsorbates {bad_ads}; choose from {tuple(ADSORBATES)}")

    every = max(1, n_systems // 6)
    frames: list[Atoms] = []
    for sid in range(n_systems):
        frames.extend(
            f for f in _system_frames(sid, seed, frames_per_system, metals, adsorbates,
                                      rattle_scale, facets)
            if f.info["kind"] in kinds
        )
        if progress is not None and ((sid + 1) % every == 0 or sid + 1 == n_systems):
            progress(f"generated {sid + 1}/{n_systems} systems ({len(frames)} frames)")
    return frames


def _split_counts(n: int, fractions: dict[str, float]) -> dict[str, int]:
    """Largest-remainder allocation of ``n`` systems, giving every split at least one."""
    names = list(fractions)
    raw = np.array([fractions[k] for k in names], dtype=float) * n
    counts = np.floor(raw).astype(int)
    order = np.argsort(-(raw - counts), kind="stable")
    for j in order[: n - int(counts.sum())]:
        counts[j] += 1
    for j in range(len(names)):
        while counts[j] < 1:
            donor = int(np.argmax(counts))
            counts[donor] -= 1
            counts[j] += 1
    return dict(zip(names, (int(c) for c in counts), strict=True))


def make_dataset(
    out_dir: str | Path,
    n_systems: int = 24,
    seed: int = 0,
    splits: dict[str, float] | None = None,
    progress: Callable[[str], None] | None = None,
    overwrite: bool = False,
    *,
    frames_per_system: int = 6,
    rattle_scale: float = 1.0,
    fmt: str = "aselmdb",
    metals: Sequence[str] = DEFAULT_METALS,
    adsorbates: Sequence[str] = DEFAULT_ADSORBATES,
    facets: Sequence[str] = DEFAULT_FACETS,
    kinds: Sequence[str] = ("relax", "rattle"),
) -> dict[str, Path]:
    """Generate the embedded dataset: ``out_dir/<split>/data.aselmdb`` (+ metadata.npz).

    Returns the split folders, which is what fairchem dataset configs take as ``src``.
    With ``fmt="pyg-lmdb"`` each split is ``data.lmdb`` instead, for fairchem-core 1.10.

    Splitting is by system (``sid``), never by frame, so frames of one relaxation cannot leak
    between train and test. Default fractions are 0.7/0.15/0.15 for train/val/test; each
    split gets at least one system. Deterministic for a given ``seed``.
    """
    paths = split_paths(out_dir, n_systems, splits, fmt, overwrite)
    frames = generate_frames(
        n_systems=n_systems,
        seed=seed,
        frames_per_system=frames_per_system,
        progress=progress,
        rattle_scale=rattle_scale,
        metals=metals,
        adsorbates=adsorbates,
        facets=facets,
        kinds=kinds,
    )
    return write_by_system(frames, n_systems, seed, paths, fmt, overwrite, progress)


def split_paths(
    out_dir: str | Path,
    n_systems: int,
    splits: dict[str, float] | None,
    fmt: str,
    overwrite: bool,
) -> dict[str, tuple[float, Path]]:
    """Each split's (fraction, dataset file), checked before any slow generation."""
    splits = dict(DEFAULT_SPLITS if splits is None else splits)
    if not splits:
        raise ValueError("splits must name at least one split")
    for name, frac in splits.items():
        if not name or "/" in name or name.startswith("."):
            raise ValueError(f"bad split name {name!r}")
        if not (math.isfinite(frac) and frac > 0):
            raise ValueError(f"split {name!r} has fraction {frac}; fractions must be > 0")
    total = sum(splits.values())
    suffix = format_suffix(fmt)
    if abs(total - 1.0) > 1e-6:
        raise ValueError(f"split fractions must sum to 1, got {total}")
    if n_systems < len(splits):
        raise ValueError(
            f"n_systems={n_systems} is too small: each of the {len(splits)} splits "
            f"({', '.join(splits)}) needs at least one system"
        )

    out_dir = Path(out_dir)
    paths = {name: out_dir / name / f"data{suffix}" for name in splits}
    existing = [str(p) for p in paths.values() if p.exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{', '.join(existing)} already exist; pass overwrite=True")
    for path in paths.values():
        if path.parent.is_dir():
            check_one_dataset(path)
    writer(fmt)  # a missing format package fails now too
    return {name: (splits[name], path) for name, path in paths.items()}


def write_by_system(
    frames: Sequence[Atoms],
    n_systems: int,
    seed: int,
    paths: dict[str, tuple[float, Path]],
    fmt: str,
    overwrite: bool,
    progress: Callable[[str], None] | None = None,
    *,
    cover_elements: bool = False,
) -> dict[str, Path]:
    """Write ``frames`` (``info["sid"]`` in 0..n_systems-1) to the splits of
    :func:`split_paths`, whole systems per split, chosen by a permutation of ``seed``.

    With ``cover_elements`` the first split (train) first takes, in permutation order, the
    systems that bring an element it lacks, so that no other split holds an element the
    training split never saw (that is what an unseen-elements OOD split is for).
    """
    write = writer(fmt)
    perm = [int(s) for s in np.random.default_rng(seed).permutation(n_systems)]
    counts = _split_counts(n_systems, {name: frac for name, (frac, _) in paths.items()})
    if cover_elements:
        perm = _covering_order(perm, frames, next(iter(counts.values())))
    start = 0
    for name, count in counts.items():
        sids = set(perm[start : start + count])
        start += count
        chosen = [f for f in frames if f.info["sid"] in sids]
        write(chosen, paths[name][1], overwrite=overwrite)
        if progress is not None:
            progress(f"wrote {len(chosen)} frames ({count} systems) to {paths[name][1]}")
    return {name: path.parent for name, (_, path) in paths.items()}


def _covering_order(perm: list[int], frames: Sequence[Atoms], first: int) -> list[int]:
    """``perm`` reordered so that its first ``first`` systems hold every element of all
    systems, where that many can (greedy, in permutation order; otherwise unchanged)."""
    elements: dict[int, set[str]] = {s: set() for s in perm}
    for f in frames:
        elements[f.info["sid"]].update(f.get_chemical_symbols())
    seen: set[str] = set()
    cover = []
    for sid in perm:
        if elements[sid] - seen:
            cover.append(sid)
            seen |= elements[sid]
    if len(cover) > first:
        return perm
    rest = [s for s in perm if s not in cover]
    head = [s for s in perm if s in cover or s in rest[: first - len(cover)]]
    return head + [s for s in perm if s not in head]


def make_ood_datasets(
    out_dir: str | Path,
    n_systems: int = 8,
    seed: int = 1000,
    splits: Sequence[str] = tuple(OOD_SPLITS),
    progress: Callable[[str], None] | None = None,
    overwrite: bool = False,
    fmt: str = "aselmdb",
) -> dict[str, Path]:
    """One dataset folder per out-of-distribution split of ``OOD_SPLITS`` (``out_dir/<name>``).

    Each split changes one thing relative to the embedded default (unseen adsorbates, an
    unseen metal, a stepped facet, hotter rattles) on systems of their own seed. The hot
    split keeps only rattled frames (``n_systems`` x 3 of them by default), since its
    relaxation frames would be in-distribution.
    """
    unknown = [s for s in splits if s not in OOD_SPLITS]
    if unknown:
        raise ValueError(f"unknown OOD splits {unknown}; choose from {tuple(OOD_SPLITS)}")
    out: dict[str, Path] = {}
    for i, name in enumerate(splits):
        folder = make_dataset(out_dir, n_systems=n_systems, seed=seed + i,
                              splits={name: 1.0}, progress=progress, overwrite=overwrite,
                              fmt=fmt, **OOD_SPLITS[name])[name]
        out[name] = folder
    return out
