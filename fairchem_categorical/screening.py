"""Adsorption-energy screening with uncertainty, and which candidates to send to DFT.

The AdsorbML recipe (fairchem's ``recipes.adsorbml``): place an adsorbate on a slab in
many ways (fairchem-data-oc's ``AdsorbateSlabConfig``), relax every placement and the
clean slab with an ML calculator, discard anomalies (fairchem-data-oc's
``DetectTrajAnomaly``: desorbed, dissociated, surface changed, intercalated),
reference to the slab and gas-phase atoms, and take the lowest energies. This module
adds what the recipe lacks: each adsorption energy with its uncertainty and 90%
interval, an OOD flag, the probability that each configuration is the system's
lowest-energy one, and a DFT recommendation by probability rather than a fixed top-k.

No fairchem here: the calculator (either line's ``CategoricalCalculator``), the
placement and the anomaly check are injected (``ScreeningTools``), so the logic is
tested with any ASE calculator.

Probability of being the lowest. Configuration i's energy has the model's predictive
distribution F_i (``predictive.PredictiveDistribution``, the one ``predict`` and
``evaluate`` use: the histogram, uniform in its bins, smoothed by the calibrated kernel
``energy_kernel_std``, which holds the epistemic part once ``fit-uncertainty`` has run),
and, the configurations taken as independent,

    P(i lowest) = integral f_i(x) prod_{j != i} (1 - F_j(x)) dx,

evaluated on a fine grid over all supports and renormalised to sum to 1 (the grid
error is far below the reported precision). A model without distributions (a scalar
checkpoint) puts all mass on its lowest energy. Anomalous configurations get 0.

DFT recommendation. Sort by P(lowest); ``coverage`` c: the smallest prefix whose
probabilities sum to >= c (the chance the true minimum is among them); ``budget`` k: the
first k. AdsorbML's fixed top-k (the k lowest predicted energies) is reported beside it
with the probability that it holds the minimum.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ase import Atoms
from ase.calculators.calculator import Calculator
from ase.constraints import FixAtoms
from scipy.special import ndtr

from fairchem_categorical.histogram import TAIL_KERNEL_BINS
from fairchem_categorical.predictive import PredictiveDistribution

#: OC20's gas-phase per-atom references (eV), as fairchem's AdsorbML recipe uses them
OC20_GAS_REFERENCES = {"H": -3.477, "O": -7.204, "C": -7.282, "N": -8.083}
ANOMALIES = ("adsorbate_dissociated", "adsorbate_desorbed", "surface_changed",
             "adsorbate_intercalated")
#: a configuration whose energy histogram has more than this mass in its edge bins is
#: flagged OOD (the model cannot place its energy inside the support it was trained on)
EDGE_MASS_OOD = 0.05
CSV_COLUMNS = (
    "system", "configuration", "adsorption_energy", "adsorption_energy_uncertainty",
    "adsorption_energy_low90", "adsorption_energy_high90", "p_lowest", "anomaly", "ood",
    "ood_score", "send_to_dft", "adsorbml_rank", "adsorbml_top_k", "energy",
    "slab_energy", "slab_energy_uncertainty", "gas_reference", "converged", "steps", "fmax",
)

Placer = Callable[[Atoms, "AdsorbateSpec", int, str, int], list[Atoms]]
AnomalyCheck = Callable[[Atoms, Atoms, Atoms], list[str]]


@dataclass
class AdsorbateSpec:
    """An adsorbate: its atoms and the indices of the atoms that bind to the surface."""

    name: str
    atoms: Atoms
    binding_indices: list[int]


@dataclass
class ScreeningTools:
    """What the screening needs from a fairchem line (the app wires the adapter's).

    ``calculator``: an ASE calculator whose results may hold the uncertainty keys of
    ``ase_results``; ``place(slab, adsorbate, n, mode, seed)``: placements (tag 2 on
    the adsorbate); ``anomalies(initial, final, relaxed_slab)``: anomaly names.
    """

    calculator: Calculator
    place: Placer
    anomalies: AnomalyCheck
    optimizer: Any = None  # an ASE Optimizer class; default LBFGS


@dataclass
class Relaxed:
    atoms: Atoms
    results: dict[str, Any]
    converged: bool
    steps: int
    fmax: float


@dataclass
class ConfigurationResult:
    system: str
    configuration: int
    initial: Atoms
    relaxed: Relaxed
    adsorption_energy: float
    adsorption_energy_uncertainty: float
    adsorption_energy_low90: float
    adsorption_energy_high90: float
    anomalies: list[str]
    ood: bool
    ood_score: float
    p_lowest: float = 0.0
    send_to_dft: bool = False
    adsorbml_rank: int = 0  # 1 = lowest predicted energy among valid configurations
    adsorbml_top_k: bool = False

    @property
    def anomaly(self) -> str:
        return ";".join(self.anomalies)


@dataclass
class SystemResult:
    system: str
    slab: Relaxed
    gas_reference: float
    configurations: list[ConfigurationResult] = field(default_factory=list)
    coverage_reached: float = math.nan   # P(true minimum in send_to_dft)
    adsorbml_coverage: float = math.nan  # P(true minimum in AdsorbML's top-k)

    @property
    def best(self) -> ConfigurationResult | None:
        valid = [c for c in self.configurations if not c.anomalies]
        return min(valid, key=lambda c: c.adsorption_energy) if valid else None


# -- inputs -----------------------------------------------------------------------------------
def prepare_slab(slab: Atoms, surface_depth: float = 2.0, fixed_fraction: float = 0.5
                 ) -> Atoms:
    """A slab as fairchem-data-oc wants it: pbc, tags (1 surface, 0 below), bottom fixed.

    OC20 tags already present (0 and 1) are kept; otherwise atoms within
    ``surface_depth`` A of the top are tagged surface. Without constraints, atoms in the lower
    ``fixed_fraction`` of the slab's height are fixed, as OC20 fixes sub-surface layers.
    """
    slab = slab.copy()
    if len(slab) == 0:
        raise ValueError("the slab has no atoms")
    if np.allclose(slab.cell.lengths(), 0):
        raise ValueError("the slab has no cell; screening needs a periodic slab with vacuum")
    slab.pbc = True
    z = slab.positions[:, 2]
    tags = set(slab.get_tags().tolist())
    if not tags <= {0, 1} or 1 not in tags:  # no OC20 tags (ase.build tags layers 1..n)
        slab.set_tags(np.where(z > z.max() - surface_depth, 1, 0))
    if not slab.constraints:
        slab.set_constraint(FixAtoms(
            indices=np.flatnonzero(z < z.min() + fixed_fraction * (z.max() - z.min()))))
    return slab


def build_slab(spec: str, size: tuple[int, int, int] = (3, 3, 4), vacuum: float = 8.0,
               fixed_layers: int = 2) -> Atoms:
    """``METAL/FACET`` (e.g. ``Cu/fcc111``, ``Pt/fcc100``) built with ASE: tags and the
    bottom ``fixed_layers`` fixed, as OC20 slabs."""
    from ase import build

    try:
        metal, facet = spec.split("/")
        builder = getattr(build, facet)
    except (ValueError, AttributeError) as err:
        raise ValueError(f"slab {spec!r}: give a file, or METAL/FACET with an ase.build "
                         "facet such as Cu/fcc111, Pt/fcc100, Ru/hcp0001") from err
    slab = builder(metal, size=size, vacuum=vacuum)
    layer = slab.get_tags()  # ase: 1 = top layer .. size[2] = bottom
    slab.set_tags(np.where(layer == 1, 1, 0))
    slab.set_constraint(FixAtoms(indices=np.flatnonzero(layer > size[2] - fixed_layers)))
    slab.pbc = True
    return prepare_slab(slab)


def read_slab(spec: str | Path) -> tuple[str, Atoms]:
    """(system name, slab) from an ASE-readable file or ``METAL/FACET``."""
    path = Path(spec)
    if path.is_file():
        from ase.io import read

        return path.stem, prepare_slab(read(path))
    if "/" in str(spec) and not path.suffix:
        return str(spec).replace("/", "_"), build_slab(str(spec))
    raise FileNotFoundError(f"slab {spec}: no such file (or give METAL/FACET, e.g. Cu/fcc111)")


def adsorbate_spec(name: str, database: dict[str, tuple[Atoms, list[int]]] | None = None
                   ) -> AdsorbateSpec:
    """An adsorbate by name: fairchem-data-oc's database (its SMILES, e.g. ``*OH``; the
    ``*`` may be left out) or an ASE molecule (``ase.build.molecule``: ``CO``, ``H2O``, ...;
    binding through atom 0)."""
    database = database or {}
    for key in (name, f"*{name}"):
        if key in database:
            atoms, binding = database[key]
            return AdsorbateSpec(key, atoms.copy(), [int(i) for i in binding])
    from ase.build import molecule
    from ase.collections import g2

    if name in g2.names:
        return AdsorbateSpec(name, molecule(name), [0])
    if name in ("H", "O", "N", "C", "S"):
        return AdsorbateSpec(name, Atoms(name), [0])
    close = sorted(k for k in database if name.strip("*").upper() in k.upper())[:8]
    hint = f", e.g. {', '.join(close)}" if close else ""
    raise ValueError(f"unknown adsorbate {name!r}: not in fairchem-data-oc's adsorbate "
                     f"database ({len(database)} SMILES{hint}) nor an ase.build molecule name")


def gas_reference(adsorbate: Atoms, references: dict[str, float]) -> float:
    """Sum of the per-atom gas-phase references of the adsorbate's atoms."""
    missing = sorted(set(adsorbate.get_chemical_symbols()) - set(references))
    if missing:
        raise ValueError(f"no gas-phase reference for {missing}; give them with "
                         f"--gas-references (known: {sorted(references)})")
    return float(sum(references[s] for s in adsorbate.get_chemical_symbols()))


# -- relaxations --------------------------------------------------------------------------------
def relax(atoms: Atoms, calculator: Calculator, fmax: float, steps: int,
          optimizer: Any = None) -> Relaxed:
    """Relax with an ASE optimizer; the calculator's results at the final geometry."""
    if optimizer is None:
        from ase.optimize import LBFGS as optimizer  # noqa: N813  (no BLAS eigh per step)
    atoms = atoms.copy()
    atoms.calc = calculator
    opt = optimizer(atoms, logfile=None)
    converged = bool(opt.run(fmax=fmax, steps=steps))
    forces = atoms.get_forces()
    results = dict(calculator.results)
    return Relaxed(atoms, results, converged, int(opt.nsteps),
                   float(np.linalg.norm(forces, axis=1).max()))


# -- probability of being the lowest -------------------------------------------------------------
@dataclass
class EnergyDistribution:
    """A configuration's predicted energy distribution, as screening compares them.

    With a histogram: the model's own predictive distribution (``predictive``), rebuilt from
    the calculator's results (``energy_probs`` on ``energy_bin_centers``, smoothed by
    ``energy_kernel_std``; a model without a fitted uncertainty: the HL-Gauss kernel alone).
    Without one (a scalar model): N(mean, extra_std^2), or all mass on the mean.
    """

    mean: float
    centers: np.ndarray | None = None
    probs: np.ndarray | None = None
    extra_std: float = 0.0
    kernel_std: float | None = None

    @classmethod
    def from_results(cls, results: dict[str, Any]) -> EnergyDistribution:
        """From calculator results (``ase_results``)."""
        mean = float(results["energy"])
        if "energy_probs" not in results:
            return cls(mean, extra_std=float(results.get("energy_uncertainty", 0.0)))
        kernel = results.get("energy_kernel_std")
        return cls(mean, np.asarray(results["energy_bin_centers"], float),
                   np.asarray(results["energy_probs"], float),
                   kernel_std=None if kernel is None else float(kernel))

    def shifted(self, offset: float) -> EnergyDistribution:
        return EnergyDistribution(self.mean + offset,
                                  None if self.centers is None else self.centers + offset,
                                  self.probs, self.extra_std, self.kernel_std)

    def _kernel(self) -> float:
        width = float(self.centers[1] - self.centers[0])
        k = self.kernel_std
        return k if k is not None and k > 0 and math.isfinite(k) else TAIL_KERNEL_BINS * width

    def span(self) -> tuple[float, float]:
        if self.centers is None:
            return self.mean - 6 * self.extra_std, self.mean + 6 * self.extra_std
        live = self.centers[self.probs > 1e-12] if (self.probs > 1e-12).any() else self.centers
        reach = 6 * self._kernel() + float(self.centers[1] - self.centers[0])
        return float(live.min() - reach), float(live.max() + reach)

    def cdf(self, x: np.ndarray) -> np.ndarray:
        if self.centers is None:
            if self.extra_std <= 0:
                return (x >= self.mean).astype(float)
            return ndtr((x - self.mean) / self.extra_std)
        rows = len(x)
        probs = torch.as_tensor(self.probs, dtype=torch.float64).expand(rows, -1)
        dist = PredictiveDistribution(probs, torch.as_tensor(self.centers), self._kernel())
        return dist.cdf(np.asarray(x, float)).numpy()


def probability_lowest(dists: Sequence[EnergyDistribution], grid_points: int = 4001
                       ) -> np.ndarray:
    """P(configuration i has the lowest energy), i over ``dists``; sums to 1."""
    n = len(dists)
    if n == 0:
        return np.zeros(0)
    if n == 1:
        return np.ones(1)
    spans = np.array([d.span() for d in dists])
    if all(d.centers is None and d.extra_std <= 0 for d in dists):  # no distributions
        out = np.zeros(n)
        out[int(np.argmin([d.mean for d in dists]))] = 1.0
        return out
    x = np.linspace(spans[:, 0].min(), spans[:, 1].max(), grid_points)
    cdfs = np.stack([d.cdf(x) for d in dists])          # (n, G)
    mass = np.diff(cdfs, axis=1)                         # P(X_i in cell g)
    mid = 0.5 * (cdfs[:, 1:] + cdfs[:, :-1])             # F_j at the cell (trapezoid)
    survive = np.clip(1.0 - mid, 0.0, 1.0)
    log_s = np.log(np.clip(survive, 1e-300, None))
    others = np.exp(log_s.sum(0, keepdims=True) - log_s)  # prod_{j != i} (1 - F_j)
    # where some survive == 0 exactly, recompute the product directly
    zero = survive <= 1e-300
    if zero.any():
        for i in range(n):
            others[i] = np.prod(np.delete(survive, i, axis=0), axis=0)
    p = (mass * others).sum(1)  # the grid starts 6 std below every distribution
    total = p.sum()
    if not total > 0:
        raise ValueError("the predicted distributions give no probability mass")
    return p / total


def recommend(p_lowest: np.ndarray, coverage: float | None = 0.9, budget: int | None = None
              ) -> np.ndarray:
    """Mask of the configurations to send to DFT (see the module docstring)."""
    if (coverage is None) == (budget is None):
        raise ValueError("give exactly one of coverage and budget")
    order = np.argsort(-p_lowest, kind="stable")
    chosen = np.zeros(len(p_lowest), bool)
    if budget is not None:
        if budget < 1:
            raise ValueError(f"budget must be >= 1, got {budget}")
        chosen[order[:budget]] = True
    else:
        if not 0 < coverage <= 1:
            raise ValueError(f"coverage must be in (0, 1], got {coverage}")
        cum = np.cumsum(p_lowest[order])
        k = int(np.searchsorted(cum, coverage - 1e-12) + 1)
        chosen[order[:min(k, len(order))]] = True
    chosen &= p_lowest > 0
    return chosen


# -- one system ----------------------------------------------------------------------------------
def screen_system(system: str, slab: Atoms, adsorbate: AdsorbateSpec, tools: ScreeningTools,
                  num_placements: int = 10, fmax: float = 0.05, steps: int = 200,
                  mode: str = "heuristic", seed: int = 0,
                  references: dict[str, float] | None = None,
                  coverage: float | None = 0.9, budget: int | None = None, top_k: int = 5,
                  progress: Callable[[int, int], None] | None = None) -> SystemResult:
    """Place, relax, check, reference and rank one slab + adsorbate system."""
    if num_placements < 1:
        raise ValueError(f"num_placements must be >= 1, got {num_placements}")
    refs = OC20_GAS_REFERENCES if references is None else references
    gas = gas_reference(adsorbate.atoms, refs)
    placements = tools.place(slab, adsorbate, num_placements, mode, seed)
    if not placements:
        raise ValueError(f"{system}: fairchem-data-oc placed no {adsorbate.name} configuration")
    total = len(placements) + 1
    relaxed_slab = relax(slab, tools.calculator, fmax, steps, tools.optimizer)
    if progress:
        progress(1, total)
    slab_energy = relaxed_slab.results["energy"]
    offset = -slab_energy - gas
    result = SystemResult(system, relaxed_slab, gas)
    dists = []
    for i, initial in enumerate(placements):
        r = relax(initial, tools.calculator, fmax, steps, tools.optimizer)
        dist = EnergyDistribution.from_results(r.results).shifted(offset)
        dists.append(dist)
        res = r.results
        e_ads = float(res["energy"]) + offset
        edge = float(res.get("energy_edge_mass", 0.0))
        ood_score = float(res.get("ood_score", math.nan))
        result.configurations.append(ConfigurationResult(
            system=system, configuration=i, initial=initial, relaxed=r,
            adsorption_energy=e_ads,
            adsorption_energy_uncertainty=float(res.get("energy_uncertainty", math.nan)),
            adsorption_energy_low90=float(res.get("energy_low90", math.nan)) + offset,
            adsorption_energy_high90=float(res.get("energy_high90", math.nan)) + offset,
            anomalies=list(tools.anomalies(initial, r.atoms, relaxed_slab.atoms)),
            ood=edge > EDGE_MASS_OOD or "unseen_elements" in res, ood_score=ood_score))
        if progress:
            progress(i + 2, total)
    rank_configurations(result, dists, coverage, budget, top_k)
    return result


def rank_configurations(result: SystemResult, dists: Sequence[EnergyDistribution],
                        coverage: float | None, budget: int | None, top_k: int) -> None:
    """p_lowest, send_to_dft and AdsorbML's top-k over the valid configurations."""
    valid = [i for i, c in enumerate(result.configurations) if not c.anomalies]
    if not valid:
        result.coverage_reached = result.adsorbml_coverage = 0.0
        return
    p = probability_lowest([dists[i] for i in valid])
    send = recommend(p, coverage, budget)
    by_energy = sorted(valid, key=lambda i: result.configurations[i].adsorption_energy)
    for rank, i in enumerate(by_energy, start=1):
        result.configurations[i].adsorbml_rank = rank
        result.configurations[i].adsorbml_top_k = rank <= top_k
    for j, i in enumerate(valid):
        result.configurations[i].p_lowest = float(p[j])
        result.configurations[i].send_to_dft = bool(send[j])
    result.coverage_reached = float(p[send].sum())
    result.adsorbml_coverage = float(sum(
        result.configurations[i].p_lowest for i in by_energy[:top_k]))


# -- outputs ---------------------------------------------------------------------------------------
def rows(systems: Sequence[SystemResult]) -> list[dict[str, Any]]:
    """One CSV row per configuration, systems in order, ranked by predicted energy."""
    out = []
    for s in systems:
        order = sorted(s.configurations, key=lambda c: (c.adsorbml_rank == 0, c.adsorbml_rank,
                                                        c.adsorption_energy))
        for c in order:
            out.append({
                "system": s.system, "configuration": c.configuration,
                "adsorption_energy": c.adsorption_energy,
                "adsorption_energy_uncertainty": c.adsorption_energy_uncertainty,
                "adsorption_energy_low90": c.adsorption_energy_low90,
                "adsorption_energy_high90": c.adsorption_energy_high90,
                "p_lowest": c.p_lowest, "anomaly": c.anomaly, "ood": c.ood,
                "ood_score": c.ood_score, "send_to_dft": c.send_to_dft,
                "adsorbml_rank": c.adsorbml_rank, "adsorbml_top_k": c.adsorbml_top_k,
                "energy": float(c.relaxed.results["energy"]),
                "slab_energy": float(s.slab.results["energy"]),
                "slab_energy_uncertainty": float(s.slab.results.get("energy_uncertainty",
                                                                    math.nan)),
                "gas_reference": s.gas_reference, "converged": c.relaxed.converged,
                "steps": c.relaxed.steps, "fmax": c.relaxed.fmax,
            })
    return out


def write_csv(systems: Sequence[SystemResult], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        for row in rows(systems):
            writer.writerow({k: (repr(v) if isinstance(v, float) and not math.isnan(v)
                                 else "" if isinstance(v, float) else v)
                             for k, v in row.items()})
    return path


def structures(systems: Sequence[SystemResult]) -> list[Atoms]:
    """Relaxed slabs and configurations with their results (uncertainties in info/arrays)."""
    from ase.calculators.singlepoint import SinglePointCalculator

    frames = []
    for s in systems:
        entries = [(s.slab, {"system": s.system, "configuration": -1, "role": "slab"})]
        entries += [(c.relaxed, {"system": s.system, "configuration": c.configuration,
                                 "role": "adslab", "adsorption_energy": c.adsorption_energy,
                                 "p_lowest": c.p_lowest, "anomaly": c.anomaly,
                                 "send_to_dft": c.send_to_dft})
                    for c in s.configurations]
        for relaxed, info in entries:
            atoms = relaxed.atoms.copy()
            atoms.info.update(info)
            res = relaxed.results
            for key in ("forces_uncertainty", "atom_ood_score"):
                if key in res:
                    atoms.arrays[key] = np.asarray(res[key])
            atoms.calc = SinglePointCalculator(atoms, energy=res["energy"],
                                               forces=res.get("forces"))
            frames.append(atoms)
    return frames


def summary_table(systems: Sequence[SystemResult], max_rows: int = 8) -> str:
    """A markdown table per screening: ranked configurations with the recommendation."""
    lines = ["| system | conf. | E_ads (eV) | ± (eV) | 90% interval | p_lowest | anomaly | "
             "send to DFT | AdsorbML rank |", "|---" * 9 + "|"]
    for row in rows(systems):
        if not 0 < row["adsorbml_rank"] <= max_rows:  # anomalies and the tail: see the CSV
            continue
        lines.append(
            f"| {row['system']} | {row['configuration']} | {row['adsorption_energy']:.3f} | "
            f"{row['adsorption_energy_uncertainty']:.3f} | "
            f"[{row['adsorption_energy_low90']:.2f}, {row['adsorption_energy_high90']:.2f}] | "
            f"{row['p_lowest']:.3f} | {row['anomaly'] or '-'} | "
            f"{'yes' if row['send_to_dft'] else ''} | {row['adsorbml_rank'] or '-'} |")
    return "\n".join(lines)
