"""Active learning: label the structures the model is least sure of, retrain, repeat.

Each round: (re)train the learner on the labelled set, score it on a held-out set
(energy MAE per atom, force MAE, and how well its uncertainty ranks its errors), then
score the unlabelled pool and send the ``per_round`` highest-scoring structures to the
reference calculator (any ASE calculator: DFT, or EMT standing in for it here), add
them to the labelled set, and go on. The score is the learner's per-atom energy
uncertainty (``"uncertainty"``: the categorical model's ``energy_uncertainty``, or an
ensemble's disagreement when the learner is an ensemble) or a random draw
(``"random"``), so strategies compare at equal numbers of reference calls. A batch of the
top uncertainties is often one system's frames, which teach the same thing; two
diversity-aware batches avoid that: ``"per_system"`` (the most uncertain frame of each
system in turn) and ``"diverse"`` (greedily, uncertainty x feature-space distance to what
is labelled or already picked).

Strategies are compared on the whole learning curve (error against reference calls): its
area (``learning_curve_area``) and the calls saved at equal error averaged over the error
range both curves reach (``calls_saved_curve``), not on the last round alone.

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
from scipy.integrate import trapezoid
from scipy.spatial.distance import cdist
from scipy.stats import spearmanr

STRATEGIES = ("uncertainty", "random", "per_system", "diverse")


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
           rng: np.random.Generator, labelled: Sequence[Atoms] = ()) -> np.ndarray:
    """Indices of the ``k`` pool structures to label, in the order picked (``uncertainty``:
    highest per-atom uncertainty first; ``per_system`` and ``diverse``: see the module
    docstring; ``labelled``: what ``diverse`` keeps its distance from)."""
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
    if strategy == "per_system":
        return per_system_order(per_atom, [system_key(a) for a in frames], k)
    if strategy == "diverse":
        feats = standardised(np.array([structure_features(a) for a in [*frames, *labelled]]))
        return diverse_order(per_atom, feats[:len(frames)], feats[len(frames):], k)
    return np.argsort(-per_atom, kind="stable")[:k]


def system_key(atoms: Atoms) -> str:
    """Which system a frame belongs to: its ``sid`` if it has one, else its formula."""
    sid = atoms.info.get("sid")
    return f"sid{sid}" if sid is not None else atoms.get_chemical_formula()


def per_system_order(scores: np.ndarray, systems: Sequence[str], k: int) -> np.ndarray:
    """The ``k`` indices taken round-robin over systems: every system's highest score
    (systems by that score), then every system's second, and so on."""
    scores = np.asarray(scores, float)
    rank = np.zeros(len(scores), int)
    for key in set(systems):
        members = np.flatnonzero(np.array(systems) == key)
        rank[members[np.argsort(-scores[members], kind="stable")]] = np.arange(len(members))
    return np.lexsort((-scores, rank))[:k]


def structure_features(atoms: Atoms, bond: float = 2.6) -> np.ndarray:
    """A cheap descriptor of an adsorbate+slab frame, for distances between frames:
    per-element atom fractions (H C N O and the metal block's mean atomic number), the
    adsorbate's height above the top slab atom, its shortest distance to a slab atom, and
    how many slab atoms lie within ``bond`` A of it (0s without a tag-2 adsorbate)."""
    numbers = atoms.numbers
    frac = [float(np.mean(numbers == z)) for z in (1, 6, 7, 8)]
    metal = numbers[numbers > 8]
    tags = atoms.get_tags()
    ads, slab = np.flatnonzero(tags == 2), np.flatnonzero(tags != 2)
    geometry = [0.0, 0.0, 0.0]
    if len(ads) and len(slab):
        d = np.array([atoms.get_distances(i, slab, mic=True) for i in ads])
        z = atoms.positions[:, 2]
        geometry = [float(z[ads].min() - z[slab].max()), float(d.min()),
                    float((d < bond).sum())]
    return np.array([*frac, float(metal.mean()) if len(metal) else 0.0, *geometry])


def standardised(features: np.ndarray) -> np.ndarray:
    """Columns to zero mean and unit std (constant columns to 0)."""
    std = features.std(0)
    return (features - features.mean(0)) / np.where(std > 0, std, 1.0)


def diverse_order(scores: np.ndarray, features: np.ndarray, labelled: np.ndarray, k: int
                  ) -> np.ndarray:
    """``k`` indices picked greedily by score x distance (in ``features``) to the nearest
    labelled or already-picked row; with nothing to be far from, or every candidate at
    distance 0, the highest score is picked."""
    scores = np.asarray(scores, float)
    k = min(k, len(scores))
    near = (cdist(features, labelled).min(1) if len(labelled)
            else np.full(len(scores), np.inf))
    picked: list[int] = []
    for _ in range(k):
        value = np.where(np.isinf(near), scores, scores * near)
        value[picked] = -np.inf
        if not (value[np.isfinite(value)] > 0).any():
            value = np.where(np.isin(np.arange(len(scores)), picked), -np.inf, scores)
        i = int(np.argmax(value))
        picked.append(i)
        near = np.minimum(near, cdist(features, features[i:i + 1])[:, 0])
    return np.array(picked, int)


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
        picks = select(learner.predict(remaining), remaining, per_round, strategy, rng,
                       labelled)
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



def learning_curve_area(calls: Sequence[float], errors: Sequence[float]) -> float:
    """The area under error against reference calls (trapezoid) over the calls spanned,
    divided by that span: the mean error over the budget, in the error's units (a curve
    that falls early has the smaller area)."""
    calls, errors = np.asarray(calls, float), np.asarray(errors, float)
    span = calls[-1] - calls[0]
    if span <= 0:
        return float(errors[0])
    return float(trapezoid(errors, calls) / span)


def calls_at_error(calls: Sequence[float], errors: Sequence[float], levels: np.ndarray
                   ) -> np.ndarray:
    """Reference calls the curve needed to first reach each error level (linear between
    rounds on its best-so-far error; NaN above its start or below its best)."""
    calls = np.asarray(calls, float)
    best = np.minimum.accumulate(np.asarray(errors, float))
    out = np.full(len(levels), math.nan)
    for j, level in enumerate(levels):
        hit = np.flatnonzero(best <= level + 1e-12)
        if not len(hit):
            continue
        i = int(hit[0])
        if i == 0 or best[i] == best[i - 1]:
            out[j] = calls[i]
        else:
            f = (best[i - 1] - level) / (best[i - 1] - best[i])
            out[j] = calls[i - 1] + f * (calls[i] - calls[i - 1])
    return out


def calls_saved_curve(ours: Sequence[RoundLog], theirs: Sequence[RoundLog],
                      levels: int = 201) -> float:
    """Reference calls ``ours`` saved against ``theirs`` at equal held-out error, averaged
    over the error levels both curves reach (from the higher of their starts down to the
    higher of their best errors); positive: ours reached those errors earlier. NaN if the
    curves share no error level."""
    def curve(log: Sequence[RoundLog]) -> tuple[np.ndarray, np.ndarray]:
        return (np.array([e.reference_calls for e in log], float),
                np.array([e.heldout_energy_mae_per_atom for e in log], float))

    (c_ours, e_ours), (c_theirs, e_theirs) = curve(ours), curve(theirs)
    high = min(e_ours[0], e_theirs[0])
    low = max(e_ours.min(), e_theirs.min())
    if not low <= high:
        return math.nan
    if high == low:
        return float(calls_at_error(c_theirs, e_theirs, np.array([low]))[0]
                     - calls_at_error(c_ours, e_ours, np.array([low]))[0])
    grid = np.linspace(low, high, levels)
    gap = calls_at_error(c_theirs, e_theirs, grid) - calls_at_error(c_ours, e_ours, grid)
    return float(trapezoid(gap, grid) / (high - low))
