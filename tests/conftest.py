"""Shared fixtures: one small embedded dataset and its bins per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.reference import fairchem_line

HAS_FAIRCHEM2 = fairchem_line() == 2
HAS_FAIRCHEM1 = fairchem_line() == 1
REPO = Path(__file__).resolve().parent.parent
CONFIGS = REPO / "configs" / "fairchem2"

# A backbone small enough that a CI run through fairchem takes seconds per epoch.
TINY_BACKBONE = [
    "backbone.sphere_channels=16", "backbone.hidden_channels=16", "backbone.edge_channels=16",
    "backbone.lmax=1", "backbone.mmax=1", "backbone.num_distance_basis=32",
]


def pytest_collection_modifyitems(config, items):  # noqa: ANN001
    """Each environment runs the core tests and its own line's adapter tests."""
    for marker, present in (("fairchem2", HAS_FAIRCHEM2), ("fairchem1", HAS_FAIRCHEM1)):
        if present:
            continue
        skip = pytest.mark.skip(reason=f"this environment has no {marker} line "
                                       f"(fairchem-core {marker[-1]}.x)")
        for item in items:
            if marker in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def small_dataset(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """4 systems x 6 frames, split by system into train/val/test folders."""
    from fairchem_categorical.data import make_dataset

    return make_dataset(tmp_path_factory.mktemp("data"), n_systems=4, seed=3)


@pytest.fixture(scope="session")
def small_bins(small_dataset: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    from fairchem_categorical.binsfile import fit_bins_files, write_bins

    fit = fit_bins_files([small_dataset["train"]], num_bins=64)
    return write_bins(fit, tmp_path_factory.mktemp("bins") / "bins.yaml",
                      [small_dataset["train"]])
