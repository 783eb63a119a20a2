"""``active-learn``: the core loop (``fairchem_categorical.active``) with fairchem learners.

``CategoricalLearner`` trains with fairchem's entry point (``jobs.train``): round 0 from
a config (or starts from a given checkpoint), every later round fine-tunes the previous
checkpoint on the grown set through fairchem's own fine-tuning path
(``esen_categorical_finetune.yaml`` with ``model.heads=null``: backbone and categorical
heads both carried over), and predicts with the line's ASE calculator
(``calculate_batch``). ``EnsembleLearner`` is the baseline: M scalar models with
different seeds, trained and fine-tuned alike; its uncertainty is the members' energy
standard deviation. fairchem-core 2.x configs.
"""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms

from fairchem_categorical.active import RoundLog, run_active_learning
from fairchem_categorical.app import checks, jobs, lines

Say = Callable[[str], None]
FINETUNE_CONFIG = "esen_categorical_finetune.yaml"


def write_dataset(frames: Sequence[Atoms], folder: Path) -> Path:
    """``folder/frames.extxyz`` and its converted dataset ``folder/data`` (returned)."""
    from ase.io import write

    from fairchem_categorical.data import convert

    folder.mkdir(parents=True, exist_ok=True)
    write(folder / "frames.extxyz", list(frames))
    convert([folder / "frames.extxyz"], folder / "data", overwrite=True)
    return folder / "data"


class CategoricalLearner:
    """One categorical model, trained then fine-tuned round by round with fairchem.

    ``fit_uncertainty``: after every (re)training, fit the epistemic state on the labelled
    set (calibrated on ``heldout_dir``: give a split that is not scored), so
    ``energy_uncertainty`` includes the feature distance; without it the calculator falls
    back to the histogram's std. ``device`` (cpu, cuda, cuda:N): where training, the fit
    and the calculator run (None: the config's device for training, fairchem's default for
    the calculator).
    """

    def __init__(self, config: str | Path, bins: str | Path, heldout_dir: str | Path,
                 workdir: str | Path, epochs: int, finetune_epochs: int,
                 overrides: Sequence[str] = (), finetune_overrides: Sequence[str] = (),
                 seed: int = 0, checkpoint: str | Path | None = None,
                 say: Say | None = None, fit_uncertainty: bool = False,
                 device: str | None = None) -> None:
        self.config, self.bins = Path(config), Path(bins)
        self.heldout_dir, self.workdir = str(heldout_dir), Path(workdir)
        self.epochs, self.finetune_epochs = epochs, finetune_epochs
        self.overrides, self.finetune_overrides = list(overrides), list(finetune_overrides)
        self.seed, self.checkpoint, self.say = seed, checkpoint, say
        self.fit_uncertainty, self.device = fit_uncertainty, device
        self.calculator: Any = None
        self.train_seconds = 0.0
        if checkpoint is not None:
            self._load(checkpoint)

    def _load(self, checkpoint: str | Path) -> None:
        self.checkpoint = Path(checkpoint)
        self.calculator = lines.current("active-learn").adapter("calculator").load_calculator(
            self.checkpoint, device=self.device)

    def fit(self, frames: Sequence[Atoms], round_index: int) -> None:
        data = write_dataset(frames, self.workdir / f"round{round_index}")
        start = time.time()
        if self.checkpoint is None:
            ckpt = jobs.train(self.config, str(data), self.heldout_dir, self.bins, self.epochs,
                              self.seed, self.workdir / "runs", self.overrides,
                              fit=self.fit_uncertainty, device=self.device)
        else:
            ckpt = jobs.train(lines.LINES[2].configs / FINETUNE_CONFIG, str(data),
                              self.heldout_dir, self.bins, self.finetune_epochs, self.seed,
                              self.workdir / "runs",
                              [f"starting_checkpoint={self.checkpoint}", "model.heads=null",
                               *self.finetune_overrides], fit=self.fit_uncertainty,
                              device=self.device)
        self.train_seconds += time.time() - start
        self._load(ckpt)

    def predict(self, frames: Sequence[Atoms]) -> list[dict[str, Any]]:
        return self.calculator.calculate_batch(list(frames))


class EnsembleLearner:
    """M scalar models (seeds 0..M-1); energy_uncertainty = the members' energy std."""

    def __init__(self, members: Sequence[CategoricalLearner]) -> None:
        if len(members) < 2:
            raise ValueError("an ensemble needs at least 2 members")
        self.members = list(members)

    @property
    def train_seconds(self) -> float:
        return sum(m.train_seconds for m in self.members)

    def fit(self, frames: Sequence[Atoms], round_index: int) -> None:
        for m in self.members:
            m.fit(frames, round_index)

    def predict(self, frames: Sequence[Atoms]) -> list[dict[str, Any]]:
        each = [m.predict(frames) for m in self.members]
        out = []
        for i in range(len(frames)):
            energies = np.array([e[i]["energy"] for e in each])
            forces = np.mean([e[i]["forces"] for e in each], axis=0)
            out.append({"energy": float(energies.mean()), "forces": forces,
                        "energy_uncertainty": float(energies.std(ddof=1))})
        return out


# a scalar member fine-tunes through the same fine-tuning config with fairchem's scalar
# tasks; the categorical cross-entropy weight it then leaves unused is deleted (fairchem -c
# refuses unused top-level keys)
SCALAR_FINETUNE_OVERRIDES = ("tasks=scalar", "dataset_format=ase_db", "energy_coefficient=20",
                             "~ce_coefficient")


def scalar_member(config: str | Path, bins: str | Path, heldout_dir: str | Path,
                  workdir: Path, epochs: int, finetune_epochs: int, seed: int,
                  overrides: Sequence[str] = (), device: str | None = None
                  ) -> CategoricalLearner:
    """An ensemble member: a scalar config; its fine-tunes keep the scalar heads and tasks."""
    return CategoricalLearner(
        config, bins, heldout_dir, workdir / f"member{seed}", epochs, finetune_epochs,
        overrides=overrides, seed=seed,
        finetune_overrides=list(SCALAR_FINETUNE_OVERRIDES), device=device)


def write_log(log: Sequence[RoundLog], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [e.row() for e in log]
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def run_active(train: str | Path, pool: str | Path, heldout: str | Path, bins: str | Path,
               out: str | Path, rounds: int = 3, per_round: int = 4,
               strategy: str = "uncertainty", ensemble: int = 0,
               config: str | Path | None = None, epochs: int = 20, finetune_epochs: int = 8,
               overrides: Sequence[str] = (), reference: Any = None, seed: int = 0,
               checkpoint: str | Path | None = None, say: Say | None = None,
               device: str | None = None, calibration: str | Path | None = None
               ) -> list[RoundLog]:
    """Active learning from data folders/files; writes ``out/active_learning.csv``.
    ``device``: where the models train and score (see ``CategoricalLearner``);
    ``calibration``: the data that validates training and calibrates the uncertainty
    (None: ``heldout``, which is then scored on the data its alpha was fitted to)."""
    from ase.calculators.emt import EMT

    from fairchem_categorical.data import read_frames

    lines.require(2, "active-learn")
    if device is not None:
        checks.device(device)
    out = Path(out)
    heldout_frames = read_frames([heldout])
    pool_frames = read_frames([pool], require_labels=False)
    for atoms in pool_frames:  # the pool's labels, if any, stay hidden from the learner
        atoms.calc = None
    configs = lines.LINES[2].configs
    val = heldout if calibration is None else calibration
    if ensemble:
        learner: Any = EnsembleLearner([
            scalar_member(config or configs / "esen_scalar_conserving.yaml", bins, val,
                          out / "work", epochs, finetune_epochs, s, overrides, device)
            for s in range(ensemble)])
    else:
        learner = CategoricalLearner(config or configs / "esen_categorical_conserving.yaml",
                                     bins, val, out / "work", epochs, finetune_epochs,
                                     overrides, seed=seed, checkpoint=checkpoint, say=say,
                                     fit_uncertainty=True, device=device)
    log, labelled = run_active_learning(
        learner, read_frames([train]), pool_frames, heldout_frames, reference or EMT(),
        rounds, per_round, strategy="uncertainty" if ensemble else strategy, seed=seed,
        say=say, fitted=checkpoint is not None and not ensemble)
    write_log(log, out / "active_learning.csv")
    (out / "summary.json").write_text(json.dumps(
        {"strategy": f"ensemble{ensemble}" if ensemble else strategy,
         "train_seconds": learner.train_seconds, "labelled": len(labelled)}, indent=1))
    return log
