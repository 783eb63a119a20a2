"""Active learning: label the structures the model is least sure of, retrain, repeat.

Each round: (re)train the learner on the labelled set, score it on a held-out set
(energy MAE per atom, force MAE, and how well its uncertainty ranks its errors), then
score the unlabelled pool and send the ``per_round`` highest-scoring structures to the
reference calculator (any ASE calculator: DFT, or EMT standing in for it here), add
them to the labelled set, and go on. The score is the learner's per-atom energy
uncertainty (``"uncertainty"``: the categorical model's ``energy_uncertainty``, or an
ensemble's disagreement when the learner is an ensemble) or a random draw
(``"random"``), so strategies compare at equal numbers of reference calls.

No fairchem here: the learner (train + predict) is injected; the app wires fairchem's
training entry point and the line's calculator.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator
from ase.calculators.singlepoint import SinglePointCalculator
from scipy.stats import spearmanr

STRATEGIES = ("uncertainty", "random")


class Learner(Protocol):
    """A model that trains on labelled frames and predicts calculator-style results."""

    def fit(self, frames: Sequence[Atoms], round_index: int) -> None: ...

    def predict(self, frames: Sequence[Atoms]) -> list[dict[str, Any]]: ...


@dataclass
class RoundLog:
    round: int
    reference_calls: int
    train_size: int
    heldout_energy_mae_per_atom: float
    heldout_forces_mae: float
    spearman_uncertainty_error: float
    selected: list[int] = field(default_factory=list)  # pool indices labelled after this round

    def row(self) -> dict[str, Any]:
        out = asdict(self)
        out["selected"] = " ".join(map(str, self.selected))
        return out


def label(frames: Sequence[Atoms], reference: Calculator) -> list[Atoms]:
    """Copies of ``frames`` with the reference calculator's energy and (unconstrained) forces."""
    out = []
    for atoms in frames:
        a = atoms.copy()
        a.calc = reference
        energy = a.get_potential_energy()
        forces = a.get_forces(apply_constraint=False)
        a.calc = SinglePointCalculator(a, energy=energy, forces=forces)
        out.append(a)
    return out


def heldout_scores(preds: Sequence[dict[str, Any]], frames: Sequence[Atoms]
                   ) -> tuple[float, float, float]:
    """(energy MAE per atom, force MAE over free atoms, Spearman(uncertainty, |error|)),
    both per atom (std and error grow with N)."""
    n = np.array([len(a) for a in frames], float)
    err = np.array([abs(p["energy"] - a.calc.results["energy"]) for p, a in
                    zip(preds, frames, strict=True)]) / n
    fmae = []
    for p, a in zip(preds, frames, strict=True):
        if "forces" in p:
            free = a.get_tags() != 0 if (a.get_tags() != 0).any() else slice(None)
            fmae.append(np.abs(p["forces"][free] - a.calc.results["forces"][free]).mean())
    u = np.array([p.get("energy_uncertainty", math.nan) for p in preds], float) / n
    ranks = np.isfinite(u).all() and len(u) > 2 and np.ptp(u) > 0 and np.ptp(err) > 0
    rho = float(spearmanr(u, err).statistic) if ranks else math.nan
    return float(err.mean()), float(np.mean(fmae)) if fmae else math.nan, rho


def select(preds: Sequence[dict[str, Any]], frames: Sequence[Atoms], k: int, strategy: str,
           rng: np.random.Generator) -> np.ndarray:
    """Indices of the ``k`` pool structures to label (highest per-atom uncertainty first)."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; choose one of {STRATEGIES}")
    k = min(k, len(frames))
    if strategy == "random":
        return np.sort(rng.choice(len(frames), size=k, replace=False))
    u = np.array([p.get("energy_uncertainty", math.nan) for p in preds], float)
    if not np.isfinite(u).all():
        raise ValueError("the learner gives no energy_uncertainty; use strategy 'random' or "
                         "a categorical checkpoint / an ensemble")
    per_atom = u / np.array([len(a) for a in frames], float)
    return np.argsort(-per_atom, kind="stable")[:k]


def run_active_learning(learner: Learner, train: Sequence[Atoms], pool: Sequence[Atoms],
                        heldout: Sequence[Atoms], reference: Calculator, rounds: int,
                        per_round: int, strategy: str = "uncertainty", seed: int = 0,
                        say: Callable[[str], None] | None = None,
                        fitted: bool = False) -> tuple[list[RoundLog], list[Atoms]]:
    """Run ``rounds`` rounds; returns the per-round log and the final labelled set.

    ``reference_calls`` counts the labelled structures beyond the starting set.
    ``fitted``: the learner is already trained on ``train`` (round 0 skips the fit).
    """
    if rounds < 0 or per_round < 1:
        raise ValueError(f"need rounds >= 0 and per_round >= 1, got {rounds}, {per_round}")
    if not train or not heldout:
        raise ValueError("active learning needs a starting training set and a held-out set")
    rng = np.random.default_rng(seed)
    labelled, remaining = list(train), list(pool)
    index = list(range(len(pool)))  # pool positions of the remaining structures
    calls, log = 0, []
    for r in range(rounds + 1):
        if r or not fitted:
            learner.fit(labelled, r)
        mae, fmae, rho = heldout_scores(learner.predict(heldout), heldout)
        entry = RoundLog(r, calls, len(labelled), mae, fmae, rho)
        log.append(entry)
        if say:
            say(f"round {r}: {calls} reference calls, {len(labelled)} training structures, "
                f"held-out energy MAE {mae * 1000:.2f} meV/atom, force MAE {fmae:.4f} eV/A, "
                f"Spearman(uncertainty, error) {rho:.3f}")
        if r == rounds or not remaining:
            break
        picks = select(learner.predict(remaining), remaining, per_round, strategy, rng)
        entry.selected = [index[i] for i in picks]
        labelled.extend(label([remaining[i] for i in picks], reference))
        calls += len(picks)
        keep = sorted(set(range(len(remaining))) - set(picks.tolist()))
        remaining = [remaining[i] for i in keep]
        index = [index[i] for i in keep]
    return log, labelled


def calls_to_reach(log: Sequence[RoundLog], target: float) -> float:
    """Reference calls a run needed to bring the held-out MAE to ``target`` (linear
    interpolation between rounds; NaN if it never did)."""
    calls = np.array([e.reference_calls for e in log], float)
    mae = np.array([e.heldout_energy_mae_per_atom for e in log], float)
    for i in range(len(mae)):
        if mae[i] <= target:
            if i == 0:
                return float(calls[0])
            f = (mae[i - 1] - target) / (mae[i - 1] - mae[i])
            return float(calls[i - 1] + f * (calls[i] - calls[i - 1]))
    return math.nan


def calls_saved(ours: Sequence[RoundLog], theirs: Sequence[RoundLog]) -> float:
    """Reference calls ``ours`` saved against ``theirs`` at equal held-out error, signed.

    Where ours reached their final error: their calls minus the calls ours needed (>= 0).
    Where it did not: minus what theirs saved against ours the same way (<= 0). Either way
    a number per run, so runs (seeds) average; NaN only if neither reached the other's.
    """
    theirs_final = theirs[-1]
    need = calls_to_reach(ours, theirs_final.heldout_energy_mae_per_atom)
    if not math.isnan(need):
        return float(theirs_final.reference_calls - need)
    back = calls_to_reach(theirs, ours[-1].heldout_energy_mae_per_atom)
    return -float(ours[-1].reference_calls - back)

