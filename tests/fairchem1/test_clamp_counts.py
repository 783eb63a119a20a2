"""fairchem 1.10: clamped targets counted in dataloader workers reach the trainer.

The binned dataset clamps in the dataloader's worker processes, where a counter would
stay; each item's flags travel with the batch instead (``CategoricalTrainer`` sums them).
"""

from __future__ import annotations

from pathlib import Path

import torch
from fairchem.core.datasets import data_list_collater

from fairchem_categorical.data.pyg_lmdb import write_pyg_lmdb
from fairchem_categorical.fairchem1.dataset import CategoricalLmdbDataset
from tests.reference import out_of_support_by_hand, small_frames

ENERGY = {"element_references": [0.0] * 100, "mean": -0.2, "std": 0.05, "level": "per_atom"}
BINS = {"energy": ENERGY, "support": {"low": -1.0, "high": 1.0, "num_bins": 16},
        "force_support": {"low": 0.0, "high": 0.3, "num_bins": 16}}


def test_counts_made_in_worker_processes_arrive_with_the_batches(tmp_path: Path) -> None:
    frames = small_frames(n_systems=3, frames_per_system=2)
    write_pyg_lmdb(frames, tmp_path / "train" / "data.lmdb")
    dataset = CategoricalLmdbDataset({"src": str(tmp_path / "train"), "categorical": BINS})
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=2, num_workers=2,
        collate_fn=lambda items: data_list_collater(items, otf_graph=True))
    energy = force = atoms = 0
    for batch in loader:
        energy += int(batch.energy_categorical_outside.sum())
        free = batch.fixed == 0
        force += int(batch.force_magnitude_outside[free].sum())
        atoms += int(free.sum())
    by_hand = out_of_support_by_hand(frames, BINS, forces=True)
    assert by_hand["energy"]["outside"] > 0 and by_hand["force magnitude"]["outside"] > 0
    assert energy == by_hand["energy"]["outside"]
    assert (force, atoms) == (by_hand["force magnitude"]["outside"],
                              by_hand["force magnitude"]["total"])
    # the main process's own counter saw nothing: the workers did the binning
    assert dataset.binner.clipped == {}
