"""Shared fixtures: one small embedded dataset and its bins per test session.

Where tests run: ``core/`` everywhere; ``fairchem2/`` and ``fairchem1/`` only in their
line's environment, and ``e2e/`` per file: each folder's conftest decides with
``collected_only_on_line``.
"""

from __future__ import annotations

import os
from pathlib import Path

# One outcome on any machine: the tests and every fairchem run they start use the same torch
# thread count (summation order follows it), whatever the machine's core count. Set before
# torch is imported; FAIRCHEM_CATEGORICAL_TEST_THREADS picks another count on purpose.
TEST_THREADS = os.environ.get("FAIRCHEM_CATEGORICAL_TEST_THREADS", "1")
os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = TEST_THREADS
# The training seed of the end-to-end runs (data seeds stay fixed): another value checks
# that an outcome does not hang on one seed.
TEST_SEED = int(os.environ.get("FAIRCHEM_CATEGORICAL_TEST_SEED", "0"))

import pytest  # noqa: E402
import torch  # noqa: E402

from tests.reference import fairchem_line  # noqa: E402

torch.set_num_threads(int(TEST_THREADS))

REPO = Path(__file__).resolve().parent.parent
CONFIGS = REPO / "configs" / "fairchem2"

# A backbone small enough that a CI run through fairchem takes seconds per epoch.
TINY_BACKBONE = [
    "backbone.sphere_channels=16", "backbone.hidden_channels=16", "backbone.edge_channels=16",
    "backbone.lmax=1", "backbone.mmax=1", "backbone.num_distance_basis=32",
]


def pytest_report_header(config) -> str:  # noqa: ANN001
    line = fairchem_line()
    other = {1: "fairchem2", 2: "fairchem1"}.get(line, "fairchem1 and fairchem2")
    return (f"fairchem-core line installed: {line}; the {other} adapter and end-to-end tests "
            f"are not collected here; torch threads: {TEST_THREADS}; training seed: {TEST_SEED}")


@pytest.fixture(scope="session")
def small_dataset(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """4 systems x 6 frames, split by system into train/val/test folders."""
    from fairchem_categorical.data import make_dataset

    return make_dataset(tmp_path_factory.mktemp("data"), n_systems=4, seed=3)


@pytest.fixture(scope="session")
def small_bins(small_dataset: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    from fairchem_categorical.bins import fit_bins_files, write_bins

    fit = fit_bins_files([small_dataset["train"]], num_bins=64)
    return write_bins(fit, tmp_path_factory.mktemp("bins") / "bins.yaml",
                      [small_dataset["train"]])
