"""fairchem 1.10: the targets are binned per batch in the trainer's loss path, not per item.

Items load as fairchem's ``LmdbDataset`` loads them (also in dataloader workers); the
trainer's ``BatchBinner`` encodes each batch as the per-item binning did and counts the
clamped targets in the main process, as many as counted by hand.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from fairchem.core.datasets import data_list_collater
from fairchem.core.datasets.lmdb_dataset import LmdbDataset

from fairchem_categorical.binner import BatchBinner, TargetBinner
from fairchem_categorical.data.pyg_lmdb import write_pyg_lmdb
from fairchem_categorical.fairchem1.dataset import CategoricalLmdbDataset
from tests.reference import out_of_support_by_hand, small_frames

ENERGY = {"element_references": [0.0] * 100, "mean": -0.2, "std": 0.05, "level": "per_atom"}
BINS = {"energy": ENERGY, "support": {"low": -1.0, "high": 1.0, "num_bins": 16},
        "force_support": {"low": 0.0, "high": 0.3, "num_bins": 16}}


@pytest.fixture
def data(tmp_path: Path) -> tuple[list, Path, Path]:
    """The frames and two copies of their dataset (an LMDB opens once per process)."""
    frames = small_frames(n_systems=3, frames_per_system=2)
    for copy in ("a", "b"):
        write_pyg_lmdb(frames, tmp_path / copy / "data.lmdb")
    return frames, tmp_path / "a", tmp_path / "b"


def test_items_load_as_fairchems_and_batches_are_binned_in_the_main_process(data) -> None:
    frames, root, other = data
    dataset = CategoricalLmdbDataset({"src": str(root), "categorical": BINS})
    plain = LmdbDataset({"src": str(other)})
    assert set(dataset[0].keys()) == set(plain[0].keys())  # nothing added per item
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=2, num_workers=2,
        collate_fn=lambda items: data_list_collater(items, otf_graph=True))
    binner = BatchBinner(BINS)
    energy = force = atoms = 0
    for batch in loader:
        free = batch.fixed.reshape(-1) == 0
        counts = binner(batch, {"force magnitude": free})
        energy += counts["energy"][0]
        force += counts["force magnitude"][0]
        atoms += counts["force magnitude"][1]
        assert batch.energy_categorical.shape == (int(batch.natoms.numel()), 16)
        assert binner(batch) == {}  # a batch binned once is not binned (or counted) again
    by_hand = out_of_support_by_hand(frames, BINS, forces=True)
    assert by_hand["energy"]["outside"] > 0 and by_hand["force magnitude"]["outside"] > 0
    assert energy == by_hand["energy"]["outside"]
    assert (force, atoms) == (by_hand["force magnitude"]["outside"],
                              by_hand["force magnitude"]["total"])


def test_a_batch_is_binned_as_its_items_were(data) -> None:
    """The histograms equal the per-item binning's (``TargetBinner``) to float tolerance."""
    _, root, _ = data
    bins = {**BINS, "energy": {**ENERGY, "element_references": [0.01 * z for z in range(100)]}}
    plain = LmdbDataset({"src": str(root)})
    per_item = TargetBinner(bins, histograms=True)
    items = [per_item(plain[i], i) for i in range(len(plain))]
    batch = data_list_collater([plain[i] for i in range(len(plain))], otf_graph=True)
    BatchBinner(bins)(batch)
    torch.testing.assert_close(batch.energy_categorical,
                               torch.cat([it.energy_categorical for it in items]))
    torch.testing.assert_close(batch.force_magnitude,
                               torch.cat([it.force_magnitude for it in items]))


def test_a_block_without_a_support_is_refused_when_the_dataset_is_made(data) -> None:
    _, root, _ = data
    with pytest.raises(ValueError, match="needs a 'categorical' block with the 'energy' "
                                         "transform and the 'support'"):
        CategoricalLmdbDataset({"src": str(root), "categorical": {"energy": ENERGY}})
