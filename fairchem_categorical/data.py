"""Datasets for training and evaluating fairchem models: generation, conversion, I/O.

The embedded default dataset is a small OC20-style catalysis set (adsorbate on an fcc metal
slab) labelled with ASE's EMT potential, so that everything downstream can be exercised on a
CPU in seconds without downloading anything. Structures are stored in the ASE-LMDB format
(``.aselmdb``) that fairchem-core 2.x's ``AseDBDataset`` reads, or in the pickled
torch-geometric LMDB format (``.lmdb``, "pyg-lmdb", see :mod:`fairchem_categorical.pyg_lmdb`)
that fairchem-core 1.10's ``LmdbDataset`` reads.

fairchem itself is imported lazily (only where unavoidable) because ``import fairchem.core``
is slow; the LMDB writer used here is ``ase_db_backends.aselmdb.LMDBDatabase``, which is the
exact class ``ase.db.connect`` (and hence ``AseDBDataset``) opens ``.aselmdb`` files with.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms
from ase.build import add_adsorbate, fcc100, fcc111
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from ase.constraints import FixAtoms
from ase.optimize import LBFGS

__all__ = [
    "ADSORBATES",
    "DEFAULT_SPLITS",
    "EMT_METALS",
    "FORMATS",
    "convert",
    "generate_frames",
    "make_dataset",
    "read_frames",
    "write_aselmdb",
]

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
}

#: Default split fractions for :func:`make_dataset`.
DEFAULT_SPLITS: dict[str, float] = {"train": 0.7, "val": 0.15, "test": 0.15}

#: Dataset formats :func:`convert` and :func:`make_dataset` write -> file suffix: ASE-LMDB for
#: fairchem-core 2.x, pickled torch-geometric LMDB for fairchem-core 1.10.
FORMATS: dict[str, str] = {"aselmdb": ".aselmdb", "pyg-lmdb": ".lmdb"}

_FACETS: dict[str, tuple[Callable[..., Atoms], tuple[str, ...]]] = {
    "fcc111": (fcc111, ("ontop", "bridge", "fcc", "hcp")),
    "fcc100": (fcc100, ("ontop", "bridge", "hollow")),
}
# (nx, ny, layers, fixed bottom layers): 16-36 slab atoms, so 17-38 atoms with the adsorbate.
_SLAB_SIZES: tuple[tuple[int, int, int, int], ...] = (
    (2, 2, 4, 2),
    (3, 3, 3, 1),
    (3, 3, 4, 2),
)
_MAX_RELAX_STEPS = 40  # relaxations are for frame diversity, not converged minima
_FMAX = 0.05
_LABEL_KEYS = frozenset({"energy", "forces", "stress", "free_energy"})
_KVP_KEYS = ("sid", "fid", "metal", "facet", "adsorbate")


# --------------------------------------------------------------------------------------------
# Generation
# --------------------------------------------------------------------------------------------


def _build_system(
    rng: np.random.Generator,
    metals: Sequence[str],
    adsorbates: Sequence[str],
) -> tuple[Atoms, dict[str, str]]:
    """Build one randomised adsorbate+slab system with OC20 tags and fixed bottom layers."""
    metal = str(metals[rng.integers(len(metals))])
    facet = ("fcc111", "fcc100")[rng.integers(2)]
    ads_name = str(adsorbates[rng.integers(len(adsorbates))])
    nx, ny, nlayers, nfixed = _SLAB_SIZES[rng.integers(len(_SLAB_SIZES))]
    vacuum = float(rng.uniform(6.0, 8.0))
    builder, sites = _FACETS[facet]

    slab = builder(metal, size=(nx, ny, nlayers), vacuum=vacuum)
    # ase.build tags layers 1 (top) .. nlayers (bottom); remap to OC20: 0 fixed, 1 surface.
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


def _labelled_frame(
    template: Atoms,
    positions: np.ndarray,
    energy: float,
    forces: np.ndarray,
    info: dict[str, Any],
) -> Atoms:
    """A standalone frame carrying EMT labels in a SinglePointCalculator."""
    frame = Atoms(
        template.numbers,
        positions=positions,
        cell=template.get_cell(),
        pbc=True,
        tags=template.get_tags(),
        constraint=[c.copy() for c in template.constraints],
    )
    # Wrap exactly as fairchem's AtomicData.from_ase does (eps=0), so stored positions equal
    # the model inputs; energies and forces are invariant under wrapping.
    frame.wrap(eps=0)
    frame.calc = SinglePointCalculator(frame, energy=float(energy), forces=np.array(forces))
    frame.info.update(info)
    return frame


def _system_frames(
    sid: int,
    seed: int,
    frames_per_system: int,
    metals: Sequence[str],
    adsorbates: Sequence[str],
    rattle_scale: float,
) -> list[Atoms]:
    """All frames of one system; its own RNG stream makes it independent of n_systems."""
    rng = np.random.default_rng([seed, sid])
    atoms, meta = _build_system(rng, metals, adsorbates)
    atoms.calc = EMT()
    free = atoms.get_tags() != 0

    # Record (positions, energy, raw forces) at every optimizer step; values are already cached.
    traj: list[tuple[np.ndarray, float, np.ndarray]] = []

    def record() -> None:
        traj.append(
            (
                atoms.get_positions(),
                atoms.get_potential_energy(),
                atoms.get_forces(apply_constraint=False),
            )
        )

    # LBFGS rather than BFGS: BFGS diagonalises its 3N x 3N Hessian every step, and once torch
    # is imported (it is, via this package) numpy's threaded OpenBLAS eigh contends with
    # torch's OpenMP threads, making generation 5-8x slower on 2 cores. LBFGS needs no BLAS.
    opt = LBFGS(atoms, logfile=None)
    opt.attach(record, interval=1)
    opt.run(fmax=_FMAX, steps=_MAX_RELAX_STEPS)

    # Quasi-Newton relaxations of EMT adsorbates can wander after reaching the minimum, so
    # snapshots are spread from the start to the lowest-energy step (the "relaxed" frame).
    best = int(np.argmin([e for _, e, _ in traj]))
    n_relax = (frames_per_system + 1) // 2
    relax_idx = np.unique(np.linspace(0, best, n_relax).round().astype(int))
    n_rattle = frames_per_system - len(relax_idx)

    base_info = {"sid": sid, **meta}
    frames: list[Atoms] = []
    for idx in relax_idx:
        pos, energy, forces = traj[idx]
        info = {**base_info, "fid": len(frames), "kind": "relax", "relax_step": int(idx)}
        frames.append(_labelled_frame(atoms, pos, energy, forces, info))

    for _ in range(n_rattle):
        idx = int(rng.integers(len(traj)))
        sigma = float(rng.uniform(0.02, 0.1)) * rattle_scale
        pos = traj[idx][0].copy()
        pos[free] += rng.normal(0.0, sigma, size=(int(free.sum()), 3))
        atoms.set_positions(pos, apply_constraint=False)
        energy = atoms.get_potential_energy()
        forces = atoms.get_forces(apply_constraint=False)
        info = {
            **base_info,
            "fid": len(frames),
            "kind": "rattle",
            "relax_step": idx,
            "rattle_sigma": sigma,
        }
        frames.append(_labelled_frame(atoms, pos, energy, forces, info))
    return frames


def generate_frames(
    n_systems: int = 24,
    seed: int = 0,
    frames_per_system: int = 6,
    metals: Sequence[str] = ("Cu", "Pt", "Ni", "Pd", "Ag", "Au"),
    adsorbates: Sequence[str] = ("H", "O", "N", "C", "OH", "CO", "NH", "CH", "NO"),
    progress: Callable[[str], None] | None = None,
    rattle_scale: float = 1.0,
) -> list[Atoms]:
    """Generate the embedded OC20-style adsorbate+slab dataset, labelled with EMT.

    Each system (index ``sid``) gets a random metal, facet (fcc111/fcc100), slab size,
    adsorbate, site, height and initial rattle, then ``frames_per_system`` frames: about half
    are snapshots spread along a short (L)BFGS relaxation, the rest are rattles (stdev
    0.02-0.1 Å times ``rattle_scale``) of random snapshots. Raising ``rattle_scale`` gives
    hotter, out-of-distribution geometries. Only free (tag != 0) atoms move, as in OC20.

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
    if not metals or not adsorbates:
        raise ValueError("metals and adsorbates must not be empty")
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
            _system_frames(sid, seed, frames_per_system, metals, adsorbates, rattle_scale)
        )
        if progress is not None and ((sid + 1) % every == 0 or sid + 1 == n_systems):
            progress(f"generated {sid + 1}/{n_systems} systems ({len(frames)} frames)")
    return frames


# --------------------------------------------------------------------------------------------
# Validation helpers
# --------------------------------------------------------------------------------------------


def _labels(atoms: Atoms, where: str) -> tuple[float, np.ndarray]:
    """Return (energy, raw forces) or raise ValueError naming ``where`` and what is wrong.

    Reads calculator results directly so nothing is ever (re)computed and constraints do not
    zero the stored forces.
    """
    calc = atoms.calc
    if calc is None:
        raise ValueError(f"{where}: no energy and no forces (no calculator attached)")
    changed = calc.check_state(atoms) if hasattr(calc, "check_state") else []
    if changed:
        raise ValueError(
            f"{where}: stale labels (atoms changed after the calculation: {', '.join(changed)})"
        )
    results = getattr(calc, "results", {}) or {}
    energy = results.get("energy")
    forces = results.get("forces")
    missing = [name for name, val in (("energy", energy), ("forces", forces)) if val is None]
    if missing:
        raise ValueError(f"{where}: no {' and no '.join(missing)}")
    try:
        energy_f = float(np.asarray(energy).reshape(()))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where}: energy is not a scalar ({energy!r})") from exc
    if not math.isfinite(energy_f):
        raise ValueError(f"{where}: non-finite energy ({energy_f})")
    forces_a = np.asarray(forces, dtype=float)
    if forces_a.shape != (len(atoms), 3):
        raise ValueError(f"{where}: forces have shape {forces_a.shape}, expected ({len(atoms)}, 3)")
    if not np.all(np.isfinite(forces_a)):
        bad = sorted({int(i) for i in np.argwhere(~np.isfinite(forces_a))[:, 0]})
        raise ValueError(f"{where}: non-finite forces on atoms {bad[:10]}")
    return energy_f, forces_a


def _jsonable(value: Any) -> bool:
    """Whether ASE's JSON encoder (used by the LMDB backend) can store ``value``."""
    from ase.io.jsonio import encode

    try:
        encode(value)
    except (TypeError, ValueError):
        return False
    return True


def _plain(value: Any) -> Any:
    """Numpy scalars -> Python scalars, so key-value pairs and JSON stay simple."""
    return value.item() if isinstance(value, np.generic) else value


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


def _lmdb_database_cls() -> type:
    """The ASE-LMDB backend class (a fairchem-core dependency), with an actionable error."""
    try:
        from ase_db_backends.aselmdb import LMDBDatabase
    except ImportError as exc:  # pragma: no cover - fairchem-core always installs it
        raise ImportError(
            ".aselmdb files need the 'ase-db-backends' package "
            "(installed with fairchem-core: pip install 'fairchem-categorical[fairchem2]')"
        ) from exc
    return LMDBDatabase


def _remove_lmdb(path: Path) -> None:
    """Remove an LMDB file together with its ``-lock`` sidecar."""
    for p in (path, path.with_name(path.name + "-lock")):
        if p.exists():
            p.unlink()


def write_aselmdb(frames: Sequence[Atoms], path: str | Path, *, overwrite: bool = False) -> Path:
    """Write labelled structures to an ASE-LMDB file readable by fairchem's AseDBDataset.

    Energy and (unconstrained) forces go through a fresh SinglePointCalculator, tags and
    the FixAtoms constraint are stored by the row, and ``atoms.info`` is stored as row
    ``data`` (AseDBDataset copies ``data`` back into ``atoms.info``, where fairchem looks
    for ``sid``/``fid``). ``sid``/``fid``/``metal``/``facet``/``adsorbate`` are also stored
    as key-value pairs so they can be queried with ``select_args``.

    All frames are validated before the file is touched; an existing file is only replaced
    with ``overwrite=True``; a partially written file is removed on error.
    """
    db_cls = _lmdb_database_cls()

    path = Path(path)
    if len(frames) == 0:
        raise ValueError(f"{path}: no structures to write")
    if path.suffix != ".aselmdb":
        raise ValueError(
            f"{path}: file name must end in .aselmdb (ase.db and fairchem's AseDBDataset "
            "pick the LMDB backend from that extension)"
        )

    rows: list[tuple[Atoms, dict[str, Any], dict[str, Any]]] = []
    for i, atoms in enumerate(frames):
        energy, forces = _labels(atoms, f"frames[{i}]")
        clean = Atoms(
            atoms.numbers,
            positions=atoms.get_positions(),
            cell=atoms.get_cell(),
            pbc=atoms.pbc,
            tags=atoms.get_tags(),
            constraint=[c.copy() for c in atoms.constraints],
        )
        clean.calc = SinglePointCalculator(clean, energy=energy, forces=forces)
        data = {
            str(k): _plain(v)
            for k, v in atoms.info.items()
            if k not in _LABEL_KEYS and _jsonable(_plain(v))
        }
        kvp = {
            k: _plain(atoms.info[k])
            for k in _KVP_KEYS
            if k in atoms.info and isinstance(_plain(atoms.info[k]), (str, int, float))
        }
        rows.append((clean, kvp, data))

    if path.exists() or path.is_symlink():
        if not overwrite:
            raise FileExistsError(f"{path} already exists; pass overwrite=True to replace it")
        if path.is_dir():
            raise IsADirectoryError(f"{path} is a directory, refusing to replace it")
    _check_one_format(path.parent, ".aselmdb")
    if path.exists() or path.is_symlink():
        _remove_lmdb(path)
    path.parent.mkdir(parents=True, exist_ok=True)

    try:
        db = db_cls(path, use_lock_file=False)
        with db:
            for clean, kvp, data in rows:
                db.write(clean, key_value_pairs=kvp, data=data)
    except BaseException:
        _remove_lmdb(path)
        raise
    # The writer's lock sidecar is useless to readers (they open with lock=False).
    lock = path.with_name(path.name + "-lock")
    if lock.exists():
        lock.unlink()
    write_metadata(path.parent)
    return path


def _aselmdb_natoms(path: Path) -> list[int]:
    db = _lmdb_database_cls()(path, readonly=True, use_lock_file=False)
    try:
        return [int(row.natoms) for row in db.select()]
    finally:
        db.close()


def _file_natoms(path: Path) -> list[int]:
    """Atom counts of one dataset file, by format."""
    if path.suffix == FORMATS["pyg-lmdb"]:
        from fairchem_categorical.pyg_lmdb import lmdb_natoms

        return lmdb_natoms(path)
    return _aselmdb_natoms(path)


def _check_one_format(folder: Path, suffix: str) -> None:
    """Refuse to mix formats in a folder: ``metadata.npz`` can only describe one of them."""
    others = [s for s in FORMATS.values() if s != suffix and any(folder.glob(f"*{s}"))]
    if others:
        raise ValueError(
            f"{folder} already holds {' and '.join(others)} files; one folder holds one dataset "
            f"(its metadata.npz describes one format), so write the {suffix} files elsewhere"
        )


def write_metadata(folder: str | Path, suffix: str = ".aselmdb") -> Path:
    """``metadata.npz`` (natoms per structure) for every ``*suffix`` file in ``folder``.

    fairchem's samplers (both lines) balance batches by atom count and read it from the
    folder that holds the data, so one folder holds one dataset (its files in sorted order).
    ``suffix`` is ``.aselmdb`` (ASE-LMDB) or ``.lmdb`` (pyg-lmdb).
    """
    if suffix not in FORMATS.values():
        raise ValueError(f"suffix must be one of {sorted(FORMATS.values())}, got {suffix!r}")
    folder = Path(folder)
    natoms: list[int] = []
    for db_path in sorted(folder.glob(f"*{suffix}")):
        natoms.extend(_file_natoms(db_path))
    out = folder / "metadata.npz"
    np.savez(out, natoms=np.asarray(natoms, dtype=np.int64))
    return out


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


def _read_db(path: Path) -> list[Atoms]:
    """Read every row of an ASE database; row ``data``/key-value pairs go into ``info``."""
    if path.suffix == ".aselmdb":
        db = _lmdb_database_cls()(path, readonly=True, use_lock_file=False)
    else:
        from ase.db import connect

        db = connect(str(path), use_lock_file=False)
    try:
        out = []
        for row in db.select():
            atoms = row.toatoms()
            atoms.info.update(row.key_value_pairs)
            if isinstance(row.data, dict):
                atoms.info.update(row.data)
            out.append(atoms)
        return out
    finally:
        if hasattr(db, "close"):
            db.close()


def _read_one(path: Path, label: str) -> list[Atoms]:
    """All structures of one file, with errors that name the file."""
    import ase.io

    if not path.exists():
        raise FileNotFoundError(f"{label}: no such file")
    if path.is_dir():
        raise IsADirectoryError(f"{label}: is a directory, expected a structure file")
    if not os.access(path, os.R_OK):
        raise PermissionError(f"{label}: not readable")
    if path.stat().st_size == 0:
        raise ValueError(f"{label}: no structures in file (file is empty)")
    try:
        if path.suffix == FORMATS["pyg-lmdb"]:
            from fairchem_categorical.pyg_lmdb import read_pyg_lmdb

            images = read_pyg_lmdb(path)
        elif path.suffix in (".aselmdb", ".db"):
            images = _read_db(path)
        else:
            images = ase.io.read(path, index=":")
    except ImportError:  # a missing optional package: its own message says what to install
        raise
    except Exception as exc:  # any parser failure becomes an error naming the file
        raise ValueError(
            f"{label}: could not read structures ({type(exc).__name__}: {exc})"
        ) from exc
    if isinstance(images, Atoms):
        images = [images]
    images = list(images)
    if not images:
        raise ValueError(f"{label}: no structures in file")
    return images


def _expand(path: Path) -> list[Path]:
    """A dataset folder stands for its ``.aselmdb`` or its pyg ``.lmdb`` files."""
    if not path.is_dir():
        return [path]
    found = {s: sorted(path.glob(f"*{s}")) for s in FORMATS.values()}
    found = {s: files for s, files in found.items() if files}
    if not found:
        raise ValueError(f"{path}: folder holds no {' or '.join(FORMATS.values())} files")
    if len(found) > 1:
        raise ValueError(
            f"{path}: folder holds both {' and '.join(found)} files; one folder holds one "
            "dataset, so pass the files themselves"
        )
    return next(iter(found.values()))


def read_frames(paths: Sequence[str | Path], require_labels: bool = True) -> list[Atoms]:
    """Read all structures from ASE-readable files and check each one is fully labelled.

    Supports anything ``ase.io.read`` understands (extxyz, traj, ...) plus ASE databases
    (``.db`` SQLite, ``.aselmdb`` LMDB; row data is merged into ``info``) and fairchem 1.10's
    pyg-lmdb ``.lmdb`` files (needs torch_geometric). Every structure
    must have a finite energy and finite (N, 3) forces; otherwise a ValueError names the file
    and the 0-based index in it, e.g. ``"data/x.xyz[3]: no forces"``. Nothing is skipped.

    A folder reads every ``.aselmdb`` (or every ``.lmdb``) in it. With
    ``require_labels=False`` (prediction), structures without any calculator results pass
    through unlabelled.

    Returned frames carry a fresh SinglePointCalculator with energy, unconstrained forces
    (and stress if present).
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    if len(paths) == 0:
        raise ValueError("no input files given, so there are no structures to read")
    frames: list[Atoms] = []
    for p in [f for path in paths for f in _expand(Path(path))]:
        label = str(p)
        for i, atoms in enumerate(_read_one(Path(p), label)):
            if not require_labels and (atoms.calc is None or not atoms.calc.results):
                frames.append(atoms)
                continue
            energy, forces = _labels(atoms, f"{label}[{i}]")
            results: dict[str, Any] = {"energy": energy, "forces": forces}
            stress = atoms.calc.results.get("stress")
            if stress is not None:
                results["stress"] = np.asarray(stress)
            atoms.calc = SinglePointCalculator(atoms, **results)
            frames.append(atoms)
    return frames


def _format_suffix(fmt: str) -> str:
    if fmt not in FORMATS:
        raise ValueError(f"unknown dataset format {fmt!r}; choose from {', '.join(FORMATS)}")
    return FORMATS[fmt]


def _writer(fmt: str) -> Callable[..., Path]:
    """The file writer for a format; fails now if pyg-lmdb's torch_geometric is missing."""
    if fmt == "pyg-lmdb":
        from fairchem_categorical.pyg_lmdb import _data_cls, write_pyg_lmdb

        _data_cls()  # before any slow reading or generation
        return write_pyg_lmdb
    return write_aselmdb


def convert(
    inputs: Sequence[str | Path],
    out: str | Path,
    overwrite: bool = False,
    *,
    fmt: str = "aselmdb",
) -> int:
    """Convert labelled structure files into one dataset file; returns structures written.

    ``fmt`` is ``"aselmdb"`` (fairchem-core 2.x) or ``"pyg-lmdb"`` (fairchem-core 1.10).
    ``out`` is a file with that format's suffix (``.aselmdb`` / ``.lmdb``) or a folder
    (written as ``out/data.aselmdb`` / ``out/data.lmdb``); either way ``metadata.npz`` lands
    beside it and the folder is the dataset's ``src``.
    """
    suffix = _format_suffix(fmt)
    out = Path(out)
    if out.suffix in FORMATS.values() and out.suffix != suffix:
        raise ValueError(
            f"{out}: a {out.suffix} file name, but the format is {fmt!r} (files end in {suffix})"
        )
    if out.suffix != suffix:
        out = out / f"data{suffix}"
    if out.exists() and not overwrite:  # fail before the (possibly slow) read
        raise FileExistsError(f"{out} already exists; pass overwrite=True to replace it")
    if out.parent.is_dir():
        _check_one_format(out.parent, suffix)
    write = _writer(fmt)
    frames = read_frames(inputs)
    write(frames, out, overwrite=overwrite)
    return len(frames)


# --------------------------------------------------------------------------------------------
# Dataset
# --------------------------------------------------------------------------------------------


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
) -> dict[str, Path]:
    """Generate the embedded dataset: ``out_dir/<split>/data.aselmdb`` (+ metadata.npz).

    Returns the split folders, which is what fairchem dataset configs take as ``src``.
    With ``fmt="pyg-lmdb"`` each split is ``data.lmdb`` instead, for fairchem-core 1.10.

    Splitting is by system (``sid``), never by frame, so frames of one relaxation cannot leak
    between train and test. Default fractions are 0.7/0.15/0.15 for train/val/test; each
    split gets at least one system. Deterministic for a given ``seed``.
    """
    splits = dict(DEFAULT_SPLITS if splits is None else splits)
    if not splits:
        raise ValueError("splits must name at least one split")
    for name, frac in splits.items():
        if not name or "/" in name or name.startswith("."):
            raise ValueError(f"bad split name {name!r}")
        if not (math.isfinite(frac) and frac > 0):
            raise ValueError(f"split {name!r} has fraction {frac}; fractions must be > 0")
    total = sum(splits.values())
    suffix = _format_suffix(fmt)
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
    for path in paths.values():  # fail before the (slow) generation
        if path.parent.is_dir():
            _check_one_format(path.parent, suffix)
    write = _writer(fmt)

    frames = generate_frames(
        n_systems=n_systems,
        seed=seed,
        frames_per_system=frames_per_system,
        progress=progress,
        rattle_scale=rattle_scale,
    )
    perm = np.random.default_rng(seed).permutation(n_systems)
    counts = _split_counts(n_systems, splits)
    start = 0
    for name, count in counts.items():
        sids = {int(s) for s in perm[start : start + count]}
        start += count
        chosen = [f for f in frames if f.info["sid"] in sids]
        write(chosen, paths[name], overwrite=overwrite)
        if progress is not None:
            progress(f"wrote {len(chosen)} frames ({count} systems) to {paths[name]}")
    return {name: path.parent for name, path in paths.items()}
