"""Prediction records and their CSV/NPZ files, shared by both fairchem lines.

One CSV row per structure; per-atom arrays (forces and their uncertainties) go
to an ``.npz`` beside the CSV, concatenated over structures with ``natoms``
giving the split, and, for categorical models, each structure's energy
histogram (``energy_bin_centers`` in eV, ``energy_probs``) and, once the model's
epistemic state is fitted, each atom's ``atom_ood_score``. Units: eV, eV/A, nats.
"""

from __future__ import annotations

import contextlib
import csv
import itertools
import logging
import math
import os
import zipfile
from collections.abc import Callable, Iterable, Iterator, Sequence, Sized
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ase.stress import full_3x3_to_voigt_6_stress

from fairchem_categorical.histogram import TAIL_KERNEL_BINS
from fairchem_categorical.predictive import PredictiveDistribution, Recalibration
from fairchem_categorical.targets import EnergyTransform, element_symbols

CSV_COLUMNS = (
    "index", "sid", "natoms", "energy", "energy_std", "energy_entropy", "energy_edge_mass",
    "energy_low90", "energy_high90", "energy_target", "forces_mae",
    "forces_uncertainty_mean", "energy_uncertainty", "ood_score",
    # the predictive distribution's kernel std (eV; with the histogram it rebuilds the
    # distribution exactly) and a shallow ensemble's std of its members' energies (eV)
    "energy_kernel_std", "energy_disagreement",
)
# elements of the structure the model's bins were never fitted on ("Au Pd"; empty: none,
# or a model that does not record them): ``flag_unseen_elements``
CSV_COLUMNS = (*CSV_COLUMNS, "unseen_elements")
#: columns that hold text, not numbers
TEXT_COLUMNS = ("sid", "unseen_elements")


@dataclass
class StructurePrediction:
    index: int
    sid: str
    natoms: int
    energy: float
    forces: np.ndarray
    energy_std: float = math.nan
    energy_entropy: float = math.nan
    energy_edge_mass: float = math.nan
    energy_low90: float = math.nan
    energy_high90: float = math.nan
    energy_target: float = math.nan
    forces_target: np.ndarray | None = None
    fixed: np.ndarray | None = None
    forces_std: np.ndarray | None = None
    forces_entropy: np.ndarray | None = None
    # the predicted energy histogram: bin centers in eV of total energy, probabilities
    energy_bin_centers: np.ndarray | None = None
    energy_probs: np.ndarray | None = None
    # a shallow ensemble's member histograms (M, K) on the same centers, for joint samples
    energy_member_probs: np.ndarray | None = None
    # the recalibration of the predictive CDF ((2, n) knots: levels, values), one per model
    energy_recalibration: np.ndarray | None = None
    unseen_elements: str = ""
    # calibrated total-energy uncertainty (histogram + epistemic), eV; OOD score (unitless)
    energy_uncertainty: float = math.nan
    ood_score: float = math.nan
    energy_kernel_std: float = math.nan
    energy_disagreement: float = math.nan
    # per-atom epistemic score (higher = less like the training data)
    atom_ood_score: np.ndarray | None = None
    # other per-structure model outputs (e.g. every epistemic method's score), not in the CSV
    extra: dict[str, float] = field(default_factory=dict)
    # stress (6 Voigt components, ASE's order and sign, eV/A^3) where the model predicts it,
    # and the frame's own where it has one
    stress: np.ndarray | None = None
    stress_target: np.ndarray | None = None

    @property
    def forces_mae(self) -> float:
        """Mean absolute force-component error over free atoms (fairchem's metric)."""
        if self.forces_target is None:
            return math.nan
        free = np.ones(self.natoms, bool) if self.fixed is None else self.fixed == 0
        if not free.any():
            free = np.ones(self.natoms, bool)
        return float(np.abs(self.forces[free] - self.forces_target[free]).mean())

    @property
    def forces_uncertainty_mean(self) -> float:
        """Mean per-atom entropy of the force-magnitude histogram (nats), if the head has one."""
        return math.nan if self.forces_entropy is None else float(self.forces_entropy.mean())

    def row(self) -> dict[str, object]:
        return {name: getattr(self, name) for name in CSV_COLUMNS}


PER_STRUCTURE = ("energy_std", "energy_entropy", "energy_edge_mass", "energy_low90",
                 "energy_high90", "energy_uncertainty", "ood_score", "energy_kernel_std",
                 "energy_disagreement")
PER_ATOM = ("forces_std", "forces_entropy", "atom_ood_score")
HISTOGRAM = ("energy_bin_centers", "energy_probs", "energy_member_probs")
#: NPZ arrays that describe the whole file, not one row per structure
RUN_ARRAYS = ("energy_recalibration",)


def _voigt(stress: Any) -> np.ndarray:
    """A stress as 6 Voigt components (ASE's order xx, yy, zz, yz, xz, xy)."""
    s = np.asarray(stress, dtype=float)
    return s if s.shape == (6,) else full_3x3_to_voigt_6_stress(s.reshape(3, 3))


def split_batch(frames: Sequence, start: int, natoms: np.ndarray, energy: np.ndarray,
                forces: np.ndarray | None, outputs: dict[str, np.ndarray],
                fixed: np.ndarray | None = None, stress: np.ndarray | None = None
                ) -> list[StructurePrediction]:
    """One record per frame from a batch's arrays (either fairchem line's predict).

    ``outputs`` may hold the per-structure uncertainty columns (``PER_STRUCTURE``),
    per-structure histograms (``energy_bin_centers``/``energy_probs``, (B, K)) and
    per-atom arrays (``PER_ATOM``); any other per-structure (B,) output goes to
    ``extra``; ``stress`` (B, 3, 3) or (B, 9) where the model predicts it. Targets (energy,
    forces, stress) come from each frame's calculator, each where the frame has it.
    """
    num = len(frames)
    others = [k for k, v in outputs.items()
              if k not in PER_STRUCTURE + PER_ATOM + HISTOGRAM and np.ndim(v) == 1
              and len(v) == num]
    offsets = np.concatenate([[0], np.cumsum(natoms)])
    preds = []
    for i, atoms in enumerate(frames):
        sl = slice(int(offsets[i]), int(offsets[i + 1]))
        n = int(natoms[i])
        results = atoms.calc.results if atoms.calc is not None else {}
        per_atom = {k: outputs[k][sl] for k in PER_ATOM if k in outputs}
        hist = {k: outputs[k][i] for k in HISTOGRAM if k in outputs}
        preds.append(StructurePrediction(
            index=start + i,
            sid=str(atoms.info.get("sid", start + i)),
            natoms=n,
            energy=float(energy[i]),
            forces=forces[sl] if forces is not None else np.full((n, 3), np.nan),
            energy_target=float(results["energy"]) if "energy" in results else math.nan,
            forces_target=np.asarray(results["forces"]) if "forces" in results else None,
            fixed=None if fixed is None else fixed[sl],
            stress=None if stress is None else _voigt(stress[i]),
            stress_target=_voigt(results["stress"]) if "stress" in results else None,
            **per_atom, **hist,
            energy_recalibration=outputs.get("energy_recalibration"),
            **{k: float(outputs[k][i]) for k in PER_STRUCTURE if k in outputs},
            extra={k: float(outputs[k][i]) for k in others},
        ))
    return preds


def chunks_of(items: Iterable, size: int) -> Iterator[list]:
    """``items`` in lists of ``size`` (the last shorter), drawn lazily: a stream of frames
    is never held whole."""
    if size < 1:
        raise ValueError(f"batch size must be >= 1, got {size}")
    it = iter(items)
    while chunk := list(itertools.islice(it, size)):
        yield chunk


def stream_in_chunks(
    frames: Iterable,
    batch_size: int,
    predict_chunk: Callable[[Sequence, int], list[StructurePrediction]],
    progress: Callable[[str], None] | None = None,
) -> Iterator[list[StructurePrediction]]:
    """Both lines' batching loop, lazily: ``predict_chunk(chunk, start)`` per batch, each
    batch's predictions yielded as they come, so memory holds one batch of frames.

    ``frames`` may be a list or a stream (``iter_frames``); progress says "n/total" where
    the total is known. An empty input is an error once it is found empty.
    """
    total = len(frames) if isinstance(frames, Sized) else None
    done = 0
    for chunk in chunks_of(frames, batch_size):
        yield predict_chunk(chunk, done)
        done += len(chunk)
        if progress:
            progress(f"predicted {done}/{total}" if total is not None else f"predicted {done}")
    if not done:
        raise ValueError("no structures to predict")


def predict_in_chunks(
    frames: Iterable,
    batch_size: int,
    predict_chunk: Callable[[Sequence, int], list[StructurePrediction]],
    progress: Callable[[str], None] | None = None,
) -> list[StructurePrediction]:
    """``stream_in_chunks`` gathered into one list."""
    if batch_size < 1:  # before an empty input is noticed
        raise ValueError(f"batch size must be >= 1, got {batch_size}")
    return [p for chunk in stream_in_chunks(frames, batch_size, predict_chunk, progress)
            for p in chunk]


def stream_frames(
    frames: Iterable,
    batch_size: int,
    make_batch: Callable[[Sequence], Any],
    run_batch: Callable[[Any, int], tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]],
    progress: Callable[[str], None] | None = None,
    unseen: UnseenElements | None = None,
) -> Iterator[list[StructurePrediction]]:
    """Both lines' prediction loop, one batch's records at a time (see ``predict_frames``);
    ``unseen`` marks each batch's structures holding elements the bins never saw."""
    def chunk_predictions(chunk: Sequence, start: int) -> list[StructurePrediction]:
        batch = make_batch(chunk)
        out, extras = run_batch(batch, start)
        forces, stress = out.get("forces"), out.get("stress")
        preds = split_batch(
            chunk, start, batch.natoms.cpu().numpy(), out["energy"].double().cpu().numpy(),
            None if forces is None else forces.double().cpu().numpy(),
            {k: v.double().cpu().numpy() for k, v in extras.items()},
            fixed=batch.fixed.cpu().numpy() if "fixed" in batch else None,
            stress=None if stress is None else stress.double().cpu().numpy())
        if unseen is not None:
            unseen.mark(preds, chunk)
        return preds

    return stream_in_chunks(frames, batch_size, chunk_predictions, progress)


def predict_frames(
    frames: Iterable,
    batch_size: int,
    make_batch: Callable[[Sequence], Any],
    run_batch: Callable[[Any, int], tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]],
    progress: Callable[[str], None] | None = None,
) -> list[StructurePrediction]:
    """Both lines' ``predict_atoms``: batch the frames, run each batch, split per structure.

    ``make_batch(chunk)`` builds the line's batch (it has ``natoms`` and ``fixed``);
    ``run_batch(batch, start)`` returns the adapter's ``predict_batch`` pair: ``energy``
    (B,) and ``forces`` (N, 3), and the uncertainty outputs (see ``split_batch``).
    """
    if batch_size < 1:
        raise ValueError(f"batch size must be >= 1, got {batch_size}")
    return [p for chunk in stream_frames(frames, batch_size, make_batch, run_batch, progress)
            for p in chunk]


class UnseenElements:
    """Which structures hold elements the model's bins never saw, gathered batch by batch:
    a stream of predictions is marked as it goes and reported once, at the end.

    ``transform`` is the energy head's ``EnergyTransform`` (None for a scalar model:
    nothing is known, nothing is marked).
    """

    def __init__(self, transform: EnergyTransform | None) -> None:
        self.transform = transform
        self.flagged: list[int] = []
        self.by_element: dict[int, list[int]] = {}
        self.total = 0

    def mark(self, preds: Sequence[StructurePrediction], frames: Sequence) -> None:
        """Set ``unseen_elements`` (``"Au Pd"``) on the predictions of such frames."""
        self.total += len(preds)
        if self.transform is None:
            return
        for pred, atoms in zip(preds, frames, strict=True):
            unseen = self.transform.unseen_elements(atoms.get_atomic_numbers())
            if unseen:
                pred.unseen_elements = element_symbols(unseen)
                self.flagged.append(pred.index)
                for z in unseen:
                    self.by_element.setdefault(z, []).append(pred.index)

    def report(self, say: Callable[[str], None] | None = None) -> list[int]:
        """Say which structures (input order) were marked; their indices."""
        if self.flagged:
            detail = "; ".join(
                f"{element_symbols([z])} in {len(idx)} ({', '.join(map(str, idx[:10]))}"
                f"{', ...' if len(idx) > 10 else ''})"
                for z, idx in sorted(self.by_element.items()))
            msg = (f"{len(self.flagged)} of {self.total} structures hold elements the model "
                   f"never saw in training ({detail}; indices in input order): their energies "
                   "are unreliable (element reference 0 eV); the CSV marks them in "
                   "'unseen_elements'")
            if say is not None:
                say(f"warning: {msg}")
            else:
                logging.warning(msg)
        return list(self.flagged)


def reported(chunks: Iterable[list[StructurePrediction]], unseen: UnseenElements,
             say: Callable[[str], None] | None = None) -> Iterator[list[StructurePrediction]]:
    """``chunks`` passed on, then the unseen elements reported once they are all through."""
    yield from chunks
    unseen.report(say)


def flag_unseen_elements(preds: Sequence[StructurePrediction], frames: Sequence,
                         transform: EnergyTransform | None,
                         say: Callable[[str], None] | None = None) -> list[int]:
    """Mark the predictions of structures holding elements the model's bins never saw.

    Sets ``unseen_elements`` (``"Au Pd"``) and says which structures (file order) hold
    them; returns their indices. ``transform`` is the energy head's ``EnergyTransform``
    (None for a scalar model: nothing is known, nothing is marked).
    """
    unseen = UnseenElements(transform)
    unseen.mark(preds, frames)
    return unseen.report(say)


@contextlib.contextmanager
def seeded(seed: int, device: str) -> Iterator[None]:
    """A fixed seed on a forked RNG (the caller's stream untouched).

    eSCN-family backbones draw a random rotation about each edge per forward pass;
    seeding each batch makes predictions repeatable.
    """
    with torch.random.fork_rng(devices=[] if str(device) == "cpu" else None):
        torch.manual_seed(seed)
        yield


ATOM_ARRAYS = ("forces_target", "fixed", "forces_std", "forces_entropy", "atom_ood_score")
#: per-structure arrays in the NPZ, (B, 6) Voigt, where every structure has one
STRUCTURE_ARRAYS = ("stress", "stress_target")


def as_columns(preds: Sequence[StructurePrediction]
               ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(CSV columns, NPZ arrays) of predictions: what ``write_predictions`` writes and
    ``read_predictions``/``load_predictions`` give back, so metrics read either alike."""
    if not preds:
        raise ValueError("no predictions (empty dataset?)")
    rows = [p.row() for p in preds]
    columns = {name: np.array([r[name] for r in rows],
                              dtype=str if name in TEXT_COLUMNS else float)
               for name in CSV_COLUMNS}
    arrays: dict[str, np.ndarray] = {
        "natoms": np.array([p.natoms for p in preds]),
        "forces": np.concatenate([p.forces for p in preds]),
    }
    for name in ATOM_ARRAYS:
        if all(getattr(p, name) is not None for p in preds):
            arrays[name] = np.concatenate([getattr(p, name) for p in preds])
    if "forces_target" not in arrays and any(p.forces_target is not None for p in preds):
        # mixed data: structures without force labels get NaN rows, which the metrics
        # leave out, so the labelled ones keep their force metrics
        arrays["forces_target"] = np.concatenate([
            np.full((p.natoms, 3), np.nan) if p.forces_target is None else p.forces_target
            for p in preds])
    for name in STRUCTURE_ARRAYS:
        if all(getattr(p, name) is not None for p in preds):
            arrays[name] = np.stack([getattr(p, name) for p in preds])
    if all(p.energy_probs is not None for p in preds):
        arrays["energy_bin_centers"] = np.stack([p.energy_bin_centers for p in preds])
        arrays["energy_probs"] = np.stack([p.energy_probs for p in preds])
    if all(p.energy_member_probs is not None for p in preds):
        arrays["energy_member_probs"] = np.stack([p.energy_member_probs for p in preds])
    recal = preds[0].energy_recalibration
    if recal is not None and all(p.energy_recalibration is not None
                                 and np.array_equal(p.energy_recalibration, recal)
                                 for p in preds):
        arrays["energy_recalibration"] = np.asarray(recal, dtype=np.float64)
    return columns, arrays


def predictive_from_files(columns: dict[str, np.ndarray], arrays: dict[str, np.ndarray]
                          ) -> PredictiveDistribution | None:
    """The predictive distribution the model predicted with, rebuilt from a prediction
    file's histogram (NPZ: ``energy_member_probs`` or ``energy_probs``, and
    ``energy_bin_centers``), kernel std (CSV: ``energy_kernel_std``) and recalibration (NPZ:
    ``energy_recalibration``, once for the file); None without a histogram. Files from
    before the kernel column: the HL-Gauss kernel alone."""
    if "energy_probs" not in arrays or "energy_bin_centers" not in arrays:
        return None
    probs = arrays.get("energy_member_probs", arrays["energy_probs"])
    centers = np.asarray(arrays["energy_bin_centers"], dtype=np.float64)
    kernel = np.asarray(columns.get("energy_kernel_std", np.full(len(centers), np.nan)),
                        dtype=np.float64)
    width = centers[:, 1] - centers[:, 0]
    kernel = np.where(np.isfinite(kernel) & (kernel > 0), kernel, TAIL_KERNEL_BINS * width)
    recal = arrays.get("energy_recalibration")
    return PredictiveDistribution(np.asarray(probs, dtype=np.float64), centers, kernel,
                                  None if recal is None else Recalibration(*recal))


def write_predictions(preds: Sequence[StructurePrediction], out_csv: str | Path
                      ) -> tuple[Path, Path]:
    """Write the CSV and the NPZ beside it; returns both paths.

    Both are written under temporary names and moved into place when complete: a failure
    leaves no half-written file, and files already there stay as they were.
    """
    if not preds:
        raise ValueError("no predictions to write (empty dataset?)")
    _, arrays = as_columns(preds)
    out_csv = Path(out_csv)
    out_npz = out_csv.with_suffix(".npz")
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    tmp_csv, tmp_npz = (p.with_name(f".{p.name}.partial-{os.getpid()}")
                        for p in (out_csv, out_npz))
    try:
        with tmp_csv.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=CSV_COLUMNS)
            writer.writeheader()
            writer.writerows(csv_row(p) for p in preds)
        with tmp_npz.open("wb") as fh:  # a handle: np.savez would append .npz to the name
            np.savez(fh, **arrays)
        os.replace(tmp_csv, out_csv)
        os.replace(tmp_npz, out_npz)
    finally:
        tmp_csv.unlink(missing_ok=True)
        tmp_npz.unlink(missing_ok=True)
    return out_csv, out_npz


def read_predictions(path: str | Path) -> dict[str, np.ndarray]:
    """The CSV as columns of floats (text columns as strings); errors name file and line."""
    path = Path(path)
    try:
        with path.open(newline="") as fh:
            reader = csv.DictReader(fh)
            rows = list(reader)
            header = list(reader.fieldnames or [])
    except (UnicodeDecodeError, csv.Error) as err:
        raise ValueError(f"{path}: not a predictions CSV ({err})") from err
    if not rows:
        raise ValueError(f"{path} holds no predictions")
    out: dict[str, np.ndarray] = {}
    for i, row in enumerate(rows):
        if None in row or any(v is None for v in row.values()):
            raise ValueError(f"{path}, line {i + 2}: the row's fields do not match the "
                             f"header's {len(header)} columns")
    for key in header:
        values = [r[key] for r in rows]
        if key in TEXT_COLUMNS:
            out[key] = np.array(values)
            continue
        numbers = []
        for i, v in enumerate(values):
            try:
                numbers.append(float(v) if v.strip() != "" else math.nan)
            except ValueError:
                raise ValueError(f"{path}, line {i + 2}, column {key!r}: not a number "
                                 f"({v[:40]!r})") from None
        out[key] = np.array(numbers)
    return out


def load_predictions(csv_path: str | Path, npz_path: str | Path | None = None
                     ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The CSV's columns and the NPZ's arrays (empty if there is no NPZ beside the CSV)."""
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise FileNotFoundError(f"predictions not found: {csv_path}")
    npz = Path(npz_path) if npz_path else csv_path.with_suffix(".npz")
    if npz_path and not npz.is_file():
        raise FileNotFoundError(f"prediction arrays not found: {npz}")
    arrays: dict[str, np.ndarray] = {}
    if npz.is_file():
        try:
            with np.load(npz) as data:
                arrays = dict(data)
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
            raise ValueError(f"{npz}: not a readable NPZ ({err})") from err
    columns = read_predictions(csv_path)
    rows = len(next(iter(columns.values())))
    if "natoms" in arrays and len(arrays["natoms"]) != rows:
        raise ValueError(f"{csv_path} has {rows} rows but {npz} holds {len(arrays['natoms'])} "
                         "structures: one of them is cut short or from another run")
    return columns, arrays


def csv_row(pred: StructurePrediction) -> dict[str, object]:
    """A prediction's CSV row as written: NaN as an empty field, floats exactly (repr)."""
    return {k: _fmt(v) for k, v in pred.row().items()}


def _fmt(value: object) -> object:
    if isinstance(value, float):
        return "" if math.isnan(value) else repr(value)
    return value
