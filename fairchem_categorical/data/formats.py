"""Reading any labelled structure file, converting it to a dataset, choosing the writer.

Anything ``ase.io.read`` understands (extxyz, traj, ...), ASE databases (``.db``,
``.aselmdb``) and fairchem-core 1.10's pyg-lmdb ``.lmdb`` files come in; ASE-LMDB
(fairchem-core 2.x) or pyg-lmdb (1.10) dataset folders go out. That is how users bring
their own DFT data.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from fairchem_categorical.data.common import (
    FORMATS,
    check_one_dataset,
    check_structure,
    format_suffix,
    label_energy,
    label_forces,
    label_stress,
    labels,
)


def writer(fmt: str) -> Callable[..., Path]:
    """The file writer for a format; fails now if pyg-lmdb's torch_geometric is missing."""
    format_suffix(fmt)
    if fmt == "pyg-lmdb":
        from fairchem_categorical.data.pyg_lmdb import data_cls, write_pyg_lmdb

        data_cls()  # before any slow reading or generation
        return write_pyg_lmdb
    from fairchem_categorical.data.aselmdb import write_aselmdb

    return write_aselmdb


def _read_one(path: Path, label: str) -> Iterator[Atoms]:
    """The structures of one file, one at a time, with errors that name the file."""
    import ase.io

    if not path.exists():
        raise FileNotFoundError(f"{label}: no such file")
    if path.is_dir():
        raise IsADirectoryError(f"{label}: is a directory, expected a structure file")
    if not os.access(path, os.R_OK):
        raise PermissionError(f"{label}: not readable")
    if path.stat().st_size == 0:
        raise ValueError(f"{label}: no structures in file (file is empty)")
    count = 0
    try:
        if path.suffix == FORMATS["pyg-lmdb"]:
            from fairchem_categorical.data.pyg_lmdb import iter_pyg_lmdb

            images = iter_pyg_lmdb(path)
        elif path.suffix in (FORMATS["aselmdb"], ".db"):
            from fairchem_categorical.data.aselmdb import iter_ase_db

            images = iter_ase_db(path)
        else:
            images = ase.io.iread(path, index=":")
        for atoms in images:
            count += 1
            yield atoms
    except ImportError as exc:  # a missing optional package: say which file needs it
        raise ImportError(f"{label}: {exc}") from exc
    except ValueError as exc:
        if str(exc).startswith(label):  # already names the file (and the entry)
            raise
        raise ValueError(f"{label}: could not read structures ({exc})") from exc
    except Exception as exc:  # any parser failure becomes an error naming the file
        raise ValueError(
            f"{label}: could not read structures ({type(exc).__name__}: {exc})"
        ) from exc
    if not count:
        raise ValueError(f"{label}: no structures in file")


def expand(path: Path) -> list[Path]:
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
    pyg-lmdb ``.lmdb`` files (needs torch_geometric). Every structure must have atoms,
    finite positions, a cell along its periodic directions (``check_structure``), a finite
    energy and finite (N, 3) forces; otherwise a ValueError names the file and the 0-based
    index in it, e.g. ``"data/x.xyz[3]: no forces"``. Nothing is skipped. Truncated or
    corrupt LMDB files are errors naming the file (and the entry, where one is bad).

    A folder reads every ``.aselmdb`` (or every ``.lmdb``) in it. With
    ``require_labels=False`` (prediction) labels are optional: a structure may carry none,
    an energy only, or energy and forces; whatever it carries is checked as above.

    Returned frames carry a fresh SinglePointCalculator with energy, unconstrained forces
    (and stress if present).
    """
    return list(iter_frames(paths, require_labels))


def iter_frames(paths: Sequence[str | Path], require_labels: bool = True) -> Iterator[Atoms]:
    """``read_frames`` one structure at a time: the same checks and errors, with memory
    that of one structure at any dataset size (fit-bins, predict, fit-uncertainty and
    evaluate stream through it)."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    if len(paths) == 0:
        raise ValueError("no input files given, so there are no structures to read")
    for p in [f for path in paths for f in expand(Path(path))]:
        label = str(p)
        for i, atoms in enumerate(_read_one(Path(p), label)):
            where = f"{label}[{i}]"
            check_structure(atoms, where)
            if not require_labels and (atoms.calc is None or not atoms.calc.results):
                atoms.calc = None
                yield atoms
                continue
            if require_labels:
                energy, forces = labels(atoms, where)
            else:
                energy = label_energy(atoms, where, required=False)
                forces = label_forces(atoms, where, required=False)
            results: dict[str, Any] = {k: v for k, v in (("energy", energy),
                                                        ("forces", forces)) if v is not None}
            stress = label_stress(atoms, where)
            if stress is not None:
                results["stress"] = stress
            atoms.calc = SinglePointCalculator(atoms, **results)
            yield atoms


def open_frames(paths: Sequence[str | Path], require_labels: bool = True) -> Iterator[Atoms]:
    """``iter_frames``, with what can fail before any work failing now: every path exists
    (a folder holds a dataset) and the first structure reads. Commands that stream
    (predict, evaluate, fit-uncertainty) call this before loading a model; a bad structure
    further on is still an error naming it, found when the stream reaches it."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    for p in [f for path in paths for f in expand(Path(path))]:
        if not p.exists():
            raise FileNotFoundError(f"{p}: no such file")
    frames = iter_frames(paths, require_labels)
    first = next(frames)  # iter_frames raises for an empty input, never stops at once
    return itertools.chain([first], frames)


def convert(
    inputs: Sequence[str | Path],
    out: str | Path,
    overwrite: bool = False,
    *,
    fmt: str = "aselmdb",
) -> int:
    """Convert labelled structure files into one dataset; returns structures written.

    ``fmt`` is ``"aselmdb"`` (fairchem-core 2.x) or ``"pyg-lmdb"`` (fairchem-core 1.10).
    ``out`` is a folder (written as ``out/data.aselmdb`` / ``out/data.lmdb``) or a file with
    that format's suffix; either way ``metadata.npz`` lands beside it and the folder is the
    dataset's ``src``. A folder that already holds another dataset is refused.
    """
    suffix = format_suffix(fmt)
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
        check_one_dataset(out)
    write = writer(fmt)
    frames = read_frames(inputs)
    write(frames, out, overwrite=overwrite)
    return len(frames)


__all__ = ["convert", "expand", "iter_frames", "open_frames", "read_frames", "writer"]
