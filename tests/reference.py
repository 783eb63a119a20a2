"""fairchem-free test helpers: small frames, rotations, one-thread torch, numpy reference math.

Expected numbers in the adapter tests come from these numpy versions of the
histogram math, never from the code under test. Shared by both fairchem lines.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from fairchem_categorical.data import generate_frames

# Small supports and an energy transform for the heads' unit tests (both lines).
SUPPORT: dict[str, Any] = {"low": -4.0, "high": 6.0, "num_bins": 32}
FORCE_SUPPORT: dict[str, Any] = {"low": 0.0, "high": 5.0, "num_bins": 24}
ENERGY: dict[str, Any] = {
    "element_references": [0.0] * 100,
    "mean": 0.1,
    "std": 0.05,
    "level": "per_atom",
}


# -- float32 tolerances from the numbers ----------------------------------------------------

FLOAT32_EPS = float(np.finfo(np.float32).eps)


def float32_atol(magnitude: Any, terms: int, spread: float = 4.0) -> np.ndarray:
    """How far two float32 evaluations of one sum may differ when only their order differs.

    A sum of ``terms`` float32 values whose absolute sum is ``magnitude`` carries a rounding
    error of about ``spread * sqrt(terms) * eps * magnitude`` (Higham & Mary's probabilistic
    bound, SIAM J. Sci. Comput. 2019: the worst case ``terms * eps`` is never reached by
    independent roundings); two orders differ by at most twice that. Tests that compare two
    float32 paths (batch sizes, presets, thread counts, another machine) use this, never a
    fixed 1e-6: it holds on every machine, and a real change (a wrong weight, a lost term,
    bf16 instead of fp32) is orders of magnitude larger.
    """
    return 2.0 * spread * np.sqrt(terms) * FLOAT32_EPS * np.asarray(magnitude, dtype=float)


def assert_within(got: Any, want: Any, atol: Any, what: str = "") -> None:
    """|got - want| <= atol elementwise (``atol`` may be an array); NaNs must match."""
    got, want = np.asarray(got, dtype=float), np.asarray(want, dtype=float)
    atol = np.broadcast_to(np.asarray(atol, dtype=float), got.shape)
    both_nan = np.isnan(got) & np.isnan(want)
    bad = ~both_nan & ~(np.abs(got - want) <= atol)
    assert not bad.any(), (
        f"{what}: {int(bad.sum())} of {bad.size} differ beyond the float32 bound; first: "
        f"got {got[bad][0]!r}, want {want[bad][0]!r}, |diff| {abs(got[bad][0] - want[bad][0]):.3g}"
        f" > {atol[bad][0]:.3g}")


def energy_float32_atol(natoms: Any, bins: dict[str, Any]) -> np.ndarray:
    """``float32_atol`` of a decoded total energy (eV) per structure.

    The head decodes a per-atom value in the binning space (a K-term sum over bin centers of
    size at most max(|low|, |high|)), pools N atoms, and scales by N * std: the magnitude of
    what float32 summed is N * (max|c| * std + |mean|), over K + N terms.
    """
    support, energy = bins["support"], bins["energy"]
    per_atom = max(abs(support["low"]), abs(support["high"])) * energy["std"] + abs(
        energy["mean"])
    natoms = np.asarray(natoms, dtype=float)
    return float32_atol(natoms * per_atom, int(support["num_bins"]) + int(natoms.max()))


def fairchem_line() -> int | None:
    """Major version of the installed fairchem-core (1 or 2), or None."""
    from fairchem_categorical.app.lines import installed_line

    return installed_line()


def collected_only_on_line(line: int, *patterns: str) -> list[str]:
    """A folder conftest's ``collect_ignore_glob``: its test files (``patterns``) run only
    where fairchem-core ``line``.x is installed; elsewhere they are not even imported."""
    return [] if fairchem_line() == line else list(patterns or ("test_*.py",))


@contextlib.contextmanager
def one_torch_thread() -> Iterator[None]:
    """Run torch on one thread: these models are tiny, and on a busy 2-core machine
    OpenMP threads waiting on each other make them several times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="module", autouse=True)
def single_torch_thread() -> Iterator[None]:
    """Autouse in every module that imports it: one torch thread per test module."""
    with one_torch_thread():
        yield


@contextlib.contextmanager
def watch_devices(device: str) -> Iterator[list[tuple[str, str]]]:
    """Records ``(op, device)`` of every tensor an op makes off ``device`` inside the block.

    A 0-d CPU tensor counts too: on CUDA it would work as a scalar, but it means the code
    made a tensor where its input was not.
    """
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_leaves

    want = torch.device(device).type
    elsewhere: list[tuple[str, str]] = []

    class Watch(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
            out = func(*args, **(kwargs or {}))
            for t in tree_leaves(out):
                if isinstance(t, torch.Tensor) and t.device.type != want:
                    elsewhere.append((str(func), str(t.device)))
            return out

    with Watch():
        yield elsewhere


def heads_outputs_on(device: str, heads: Any, data: Any, node: torch.Tensor) -> dict:
    """Every head's outputs on ``node`` embeddings, asserting that none of their ops made a
    tensor off ``device`` (both lines' heads take ``(data, {"node_embedding": node})``)."""
    out: dict = {}
    with watch_devices(device) as elsewhere:
        for head in heads:
            out.update(head(data, {"node_embedding": node}))
    assert elsewhere == [], elsewhere
    return out


@functools.lru_cache(maxsize=4)
def _frames(n_systems: int, frames_per_system: int) -> tuple[Atoms, ...]:
    return tuple(generate_frames(n_systems=n_systems, frames_per_system=frames_per_system,
                                 seed=0))


def small_frames(n_systems: int = 2, frames_per_system: int = 1) -> list[Atoms]:
    """EMT adsorbate+slab frames (18 and 29 atoms for the default two), generated once."""
    out = []
    for atoms in _frames(n_systems, frames_per_system):
        copy = atoms.copy()
        copy.calc = SinglePointCalculator(copy, **atoms.calc.results)
        out.append(copy)
    return out


def rotated(atoms: Atoms, rotation: np.ndarray) -> Atoms:
    """Positions and cell rotated by ``rotation`` (x -> R x); labels rotated alike."""
    out = atoms.copy()
    out.set_cell(np.asarray(atoms.get_cell()) @ rotation.T, scale_atoms=False)
    out.positions = atoms.get_positions() @ rotation.T
    results = atoms.calc.results
    out.calc = SinglePointCalculator(out, energy=results["energy"],
                                     forces=np.asarray(results["forces"]) @ rotation.T)
    return out


# -- numpy reference math ---------------------------------------------------------------


def np_centers(spec: dict[str, Any]) -> np.ndarray:
    edges = np.linspace(spec["low"], spec["high"], spec["num_bins"] + 1)
    return (edges[1:] + edges[:-1]) / 2


def np_probs(logits: torch.Tensor) -> np.ndarray:
    z = logits.detach().double().cpu().numpy()
    z = z - z.max(-1, keepdims=True)
    p = np.exp(z)
    return p / p.sum(-1, keepdims=True)


def np_hl_gauss(spec: dict[str, Any], y: np.ndarray) -> np.ndarray:
    """HL-Gauss histograms (rows) for targets ``y``: the Gaussian mass in each bin,
    renormalised over the support; sigma is ``sigma`` or ``sigma_ratio`` bin widths."""
    from scipy.stats import norm

    edges = np.linspace(spec["low"], spec["high"], spec["num_bins"] + 1)
    sigma = spec.get("sigma") or spec.get("sigma_ratio", 0.75) * (
        spec["high"] - spec["low"]) / spec["num_bins"]
    y = np.clip(np.atleast_1d(np.asarray(y, dtype=np.float64)), spec["low"], spec["high"])
    cdf = norm.cdf((edges[None, :] - y[:, None]) / sigma)
    mass = np.diff(cdf, axis=-1)
    return mass / mass.sum(-1, keepdims=True)


def np_log_softmax(logits: torch.Tensor) -> np.ndarray:
    z = logits.detach().double().cpu().numpy()
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


# -- checkpoints written before the re-layout ----------------------------------------------

LEGACY = Path(__file__).resolve().parent / "data" / "legacy"


def assert_predicts_as_recorded(preds: list, expected_csv: Path) -> None:
    """``preds`` equal the CSV/NPZ a checkpoint's own code version wrote for the same frames.

    Tolerances cover float32 reassociation only (another machine, thread count or torch):
    energies in eV get ``energy_float32_atol`` of the checkpoint's bins (``bins.yaml``
    beside the CSV); a checkpoint that loads with another support, transform or head
    wiring is off by far more.
    """
    import yaml

    from fairchem_categorical.predictions import as_columns, load_predictions

    want_cols, want_arrays = load_predictions(expected_csv)
    got_cols, got_arrays = as_columns(preds)
    bins = yaml.safe_load((expected_csv.parent / "bins.yaml").read_text())
    energy_atol = energy_float32_atol(want_cols["natoms"], bins)
    for key in ("natoms", "energy_target"):
        np.testing.assert_array_equal(got_cols[key], want_cols[key], err_msg=key)
    for key in ("energy", "energy_std", "energy_low90", "energy_high90"):
        assert_within(got_cols[key], want_cols[key], energy_atol, key)
    for key in ("energy_entropy", "energy_edge_mass", "forces_mae", "forces_uncertainty_mean"):
        np.testing.assert_allclose(got_cols[key], want_cols[key], rtol=1e-6, atol=1e-6,
                                   equal_nan=True, err_msg=key)
    assert set(want_arrays) <= set(got_arrays), sorted(set(want_arrays) - set(got_arrays))
    # per-atom arrays (forces, their histograms' std, ...): a decoded value sums K bins and a
    # force sums over up to N neighbours' terms; magnitude: the array's largest entry
    terms = int(bins["support"]["num_bins"]) + int(np.max(want_cols["natoms"]))
    for key, want in want_arrays.items():
        if want.dtype.kind not in "fc":
            np.testing.assert_array_equal(got_arrays[key], want, err_msg=key)
            continue
        scale = float(np.nanmax(np.abs(want))) if np.isfinite(want).any() else 0.0
        assert_within(got_arrays[key], want, float32_atol(scale, terms), key)


# -- targets outside the support, counted by hand -------------------------------------------


def out_of_support_by_hand(frames: list[Atoms], bins: dict[str, Any], forces: bool
                           ) -> dict[str, dict[str, int]]:
    """What one pass of training clamps, as the losses see the targets: one binning-space
    energy per structure, one force magnitude per free atom (``forces``: the config trains
    a force-magnitude histogram). Same layout as ``out_of_support.json``'s totals."""
    from ase.constraints import FixAtoms

    energy, support = bins["energy"], bins["support"]
    refs = np.asarray(energy["element_references"], dtype=np.float64)
    out = {"energy": {"outside": 0, "total": 0}}
    if forces:
        out["force magnitude"] = {"outside": 0, "total": 0}
    for atoms in frames:
        e = float(atoms.calc.results["energy"])
        y = ((e - refs[atoms.numbers].sum()) / len(atoms) - energy["mean"]) / energy["std"]
        out["energy"]["total"] += 1
        out["energy"]["outside"] += int(y < support["low"] or y > support["high"])
        if forces:
            fixed = np.zeros(len(atoms), bool)
            for c in atoms.constraints:
                if isinstance(c, FixAtoms):
                    fixed[c.index] = True
            norms = np.linalg.norm(np.asarray(atoms.calc.results["forces"]), axis=1)[~fixed]
            fs = bins["force_support"]
            out["force magnitude"]["total"] += len(norms)
            out["force magnitude"]["outside"] += int(((norms < fs["low"]) |
                                                      (norms > fs["high"])).sum())
    return out


def times(counts: dict[str, dict[str, int]], n: int) -> dict[str, dict[str, int]]:
    return {k: {f: v * n for f, v in c.items()} for k, c in counts.items()}


def narrowed_bins(bins_file: Path, out: Path, energy_half_width: float = 0.8,
                  force_high: float = 1.0) -> Path:
    """A copy of a fit-bins file whose supports are too narrow for the data: training must
    clamp (and count) some energy and force-magnitude targets."""
    import yaml

    bins = yaml.safe_load(Path(bins_file).read_text())
    bins["support"]["low"], bins["support"]["high"] = -energy_half_width, energy_half_width
    force = bins["force_support"]  # keeps its shape: symmetric [-F, F] or [0, F]
    force["low"], force["high"] = (-force_high if force["low"] < 0 else 0.0), force_high
    out.write_text(yaml.safe_dump(bins))
    return out


# -- frames for the epistemic tests (both lines) ----------------------------------------------

@functools.lru_cache(maxsize=1)
def _epistemic_frames() -> dict[str, tuple[Atoms, ...]]:
    train = generate_frames(n_systems=8, seed=0)
    held_out = generate_frames(n_systems=3, seed=1, frames_per_system=2)
    rng = np.random.default_rng(0)
    hot = []
    for atoms in held_out:  # the same structures, free atoms rattled by 0.3 A
        copy = atoms.copy()
        free = copy.get_tags() != 0
        copy.positions[free] += rng.normal(0.0, 0.3, (int(free.sum()), 3))
        hot.append(copy)
    unseen = generate_frames(n_systems=2, seed=2, metals=("Al",), frames_per_system=2)
    return {"train": tuple(train), "held_out": tuple(held_out), "hot": tuple(hot),
            "unseen_element": tuple(unseen)}


def epistemic_frames() -> dict[str, list[Atoms]]:
    """Training frames (8 systems of the default metals), held-out in-distribution frames,
    the same held-out frames rattled hot (no labels), frames of an unseen metal (Al)."""
    out = {}
    for name, frames in _epistemic_frames().items():
        out[name] = []
        for atoms in frames:
            copy = atoms.copy()
            if atoms.calc is not None:
                copy.calc = SinglePointCalculator(copy, **atoms.calc.results)
            out[name].append(copy)
    return out


def assert_epistemic_outputs(preds: list, alpha: float, method: str = "mahalanobis_tied"
                             ) -> None:
    """energy_uncertainty is the std of the histogram (uniform in its bins: + w^2 / 12)
    smoothed by a Gaussian of std sqrt(k^2 + alpha^2 e^2) (one member, predictive
    temperature 1, power 1: a state calibrate has not yet touched)."""
    for p in preds:
        width = p.energy_bin_centers[1] - p.energy_bin_centers[0]
        e = p.extra[f"epistemic_std_{method}"]
        want = np.sqrt(p.energy_std**2 + width**2 / 12 + (0.75 * width) ** 2
                       + (alpha * e) ** 2)
        assert p.energy_uncertainty == pytest.approx(want, rel=1e-4)
        assert p.ood_score == pytest.approx(p.extra[f"ood_{method}"])
        assert p.atom_ood_score.shape == (p.natoms,)
        assert p.ood_score == pytest.approx(float(np.mean(p.atom_ood_score)), rel=1e-6)


def fitted_energy_readout(support: dict, num_structures: int = 5, atoms_per: int = 6):
    """A small CategoricalEnergyReadout (4 features, Cu atoms) with a fitted epistemic state,
    and the (features, batch, natoms, atomic numbers) it was fitted on."""
    import torch

    from fairchem_categorical.epistemic import FeatureStatistics, fit_state
    from fairchem_categorical.readout import CategoricalEnergyReadout

    energy = {"element_references": [0.0] * 100, "mean": 0.0, "std": 1.0, "level": "per_atom"}
    readout = CategoricalEnergyReadout(4, 8, support, energy).eval()
    n = num_structures * atoms_per
    x = torch.randn(n, 4, generator=torch.Generator().manual_seed(0))
    inputs = (x, torch.arange(n) // atoms_per, torch.full((num_structures,), atoms_per),
              torch.full((n,), 29))
    with readout.epistemic.collecting(FeatureStatistics()) as stats:
        readout.energy_outputs(*inputs)
    readout.epistemic.load(fit_state(stats))
    return readout, inputs

