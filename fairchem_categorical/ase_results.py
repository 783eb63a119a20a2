"""What both lines' ASE calculators put in ``results`` and ``atoms.info`` (no fairchem here).

A calculator on either line runs its adapter's ``predict_batch`` (the same call
``predict`` makes, so the two agree) and hands the pair ``(out, extras)`` to
``structure_results``, which splits it into one ASE results dict per structure:

* ``energy``, ``free_energy`` (a copy, as fairchem's calculator sets it), ``forces``,
  ``stress`` (Voigt, when the model predicts it);
* ``energy_uncertainty`` (eV, total energy): the designated, calibrated uncertainty
  when the model provides it (issue 12), else the histogram's ``energy_std``;
  ``energy_std`` itself; ``energy_low90``/``energy_high90``, the central 90% interval;
  ``ood_score`` when the model provides it; ``energy_edge_mass`` (probability in the
  histogram's outermost bins: the energy may lie beyond the support);
  ``energy_kernel_std`` (eV) when the uncertainty is fitted: with the histogram it rebuilds
  the predictive distribution (``predictive.PredictiveDistribution``);
* the histogram itself, ``energy_bin_centers`` and ``energy_probs`` (K,), on the eV axis;
* per atom (N,): ``forces_uncertainty`` (eV/A: the std of the force-magnitude histogram
  of a direct-force head, or the spread of a conservative shallow ensemble's members'
  forces, sqrt(mean_m |F_m - mean F|^2), as MACE's committee reports it) and
  ``atom_ood_score`` when the model provides it.

Scalar checkpoints give only the first group. A structure holding elements the model's
bins were never fitted on gets ``unseen_elements`` (``"Au Pd"``; its energy is unreliable).
The per-structure scalars (and ``unseen_elements``) are also copied into ``atoms.info``
(``INFO_KEYS``) so trajectories and databases keep them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, MutableMapping
from typing import Any

import numpy as np
import torch

from fairchem_categorical.targets import EnergyTransform, element_symbols

#: per-structure uncertainty results, in the order they are reported
STRUCTURE_KEYS = ("energy_uncertainty", "energy_std", "energy_low90", "energy_high90",
                  "ood_score", "energy_edge_mass", "energy_kernel_std")
#: per-atom uncertainty results (N,)
ATOM_KEYS = ("forces_uncertainty", "atom_ood_score")
#: the predicted energy histogram on the eV axis, (K,) per structure (screening ranks with it)
HISTOGRAM_KEYS = ("energy_bin_centers", "energy_probs")
#: the scalars copied into atoms.info
INFO_KEYS = STRUCTURE_KEYS
#: where each result comes from in predict_batch's extras (first present wins)
SOURCES: dict[str, tuple[str, ...]] = {
    "energy_uncertainty": ("energy_uncertainty", "energy_std"),
    "energy_std": ("energy_std",),
    "energy_low90": ("energy_low90",),
    "energy_high90": ("energy_high90",),
    "ood_score": ("ood_score",),
    "forces_uncertainty": ("forces_uncertainty", "forces_std"),
    "atom_ood_score": ("atom_ood_score",),
    "energy_edge_mass": ("energy_edge_mass",),
    "energy_kernel_std": ("energy_kernel_std",),
    "energy_bin_centers": ("energy_bin_centers",),
    "energy_probs": ("energy_probs",),
}
BASE_PROPERTIES = ("energy", "free_energy", "forces", "stress")


def _numpy(x: torch.Tensor | np.ndarray) -> np.ndarray:
    if torch.is_tensor(x):
        return x.detach().double().cpu().numpy()
    return np.asarray(x, dtype=float)


def _voigt(stress: np.ndarray) -> np.ndarray:
    """(3, 3) or (9,) stress -> ASE's Voigt order xx, yy, zz, yz, xz, xy."""
    s = stress.reshape(3, 3)
    return np.array([s[0, 0], s[1, 1], s[2, 2], s[1, 2], s[0, 2], s[0, 1]])


def available_keys(extras: Mapping[str, Any]) -> list[str]:
    """The uncertainty result keys that ``extras`` can fill."""
    return [key for key, src in SOURCES.items() if any(s in extras for s in src)]


def structure_results(out: Mapping[str, Any], extras: Mapping[str, Any],
                      natoms: torch.Tensor | np.ndarray | list[int]) -> list[dict[str, Any]]:
    """One ASE results dict per structure from a ``predict_batch`` pair.

    ``out``: ``energy`` (B,), ``forces`` (N, 3), optional ``stress`` (B, 3, 3) or (B, 9);
    ``extras``: per-structure (B,) and per-atom (N,) tensors (other shapes are ignored).
    """
    natoms = _numpy(torch.as_tensor(np.asarray(natoms))).astype(int).reshape(-1)
    energy = _numpy(out["energy"]).reshape(-1)
    if energy.shape[0] != natoms.shape[0]:
        raise ValueError(f"{energy.shape[0]} energies for {natoms.shape[0]} structures")
    offsets = np.concatenate([[0], np.cumsum(natoms)])
    forces = _numpy(out["forces"]).reshape(-1, 3) if "forces" in out else None
    stress = _numpy(out["stress"]).reshape(len(natoms), 9) if "stress" in out else None
    arrays = {key: _numpy(extras[src]) for key, sources in SOURCES.items()
              for src in sources[::-1] if src in extras}  # first source overwrites the rest
    results = []
    for i in range(len(natoms)):
        sl = slice(int(offsets[i]), int(offsets[i + 1]))
        res: dict[str, Any] = {"energy": float(energy[i]), "free_energy": float(energy[i])}
        if forces is not None:
            res["forces"] = forces[sl].copy()
        if stress is not None:
            res["stress"] = _voigt(stress[i])
        for key in STRUCTURE_KEYS:
            if key in arrays and arrays[key].shape == (len(natoms),):
                res[key] = float(arrays[key][i])
        for key in ATOM_KEYS:
            if key in arrays and arrays[key].shape == (int(offsets[-1]),):
                res[key] = arrays[key][sl].copy()
        for key in HISTOGRAM_KEYS:
            if key in arrays and arrays[key].ndim == 2 and len(arrays[key]) == len(natoms):
                res[key] = arrays[key][i].copy()
        bad = [k for k in res if not np.isfinite(res[k]).all()]
        if bad:  # a check, not an assert: it must hold under python -O too
            raise ValueError(f"structure {i} of the batch ({natoms[i]} atoms): the model "
                             f"predicted non-finite {', '.join(bad)} (NaN or inf)")
        results.append(res)
    return results


def mark_unseen_elements(results: Iterable[MutableMapping[str, Any]],
                         numbers: Iterable[Any], transform: EnergyTransform | None,
                         warned: set[int]) -> None:
    """``unseen_elements`` in the results of structures holding elements the bins never saw.

    ``numbers``: each structure's atomic numbers; ``transform``: the energy head's (None for
    a scalar model: nothing is known, nothing is marked). Warns once per element into
    ``warned`` (the calculator's own set), so a relaxation does not repeat itself.
    """
    if transform is None:
        return
    for res, z in zip(results, numbers, strict=True):
        unseen = transform.unseen_elements(z)
        if not unseen:
            continue
        res["unseen_elements"] = element_symbols(unseen)
        new = [e for e in unseen if e not in warned]
        if new:
            warned.update(new)
            logging.warning("elements the model never saw in training: %s; energies of "
                            "structures holding them are unreliable (element reference 0 eV)",
                            element_symbols(new))


def implemented(base: list[str], results: Mapping[str, Any]) -> list[str]:
    """``base`` plus the uncertainty keys a calculation returned (no duplicates)."""
    extra = [k for k in (*STRUCTURE_KEYS, *ATOM_KEYS, *HISTOGRAM_KEYS)
             if k in results and k not in base]
    return [*base, *extra]


def copy_to_info(results: Mapping[str, Any], *infos: MutableMapping[str, Any]) -> None:
    """The per-structure scalars of ``results`` into each ``atoms.info`` given.

    The calculator passes both the user's atoms and its own copy, so fairchem's
    ``check_state`` (which compares ``info``) sees no change and does not recompute.
    """
    for info in infos:
        for key in INFO_KEYS:
            if key in results:
                info[key] = float(results[key])
        if "unseen_elements" in results:
            info["unseen_elements"] = results["unseen_elements"]
        else:
            info.pop("unseen_elements", None)
