"""Counting targets outside the support: per epoch, per run, summed over ranks, reported."""

from __future__ import annotations

import json

import pytest
import torch

from fairchem_categorical.clipping import (
    ENERGY,
    FORCE,
    SUMMARY_FILE,
    Counts,
    SupportTally,
    read_summary,
    report,
    summary_line,
)
from fairchem_categorical.histogram import HistogramSupport
from fairchem_categorical.losses import HistogramLoss


def test_counts_describe_merge_and_difference() -> None:
    a = Counts()
    a.add(ENERGY, 3, 120)
    a.add(FORCE, 0, 2400)
    assert a.describe() == "energy 3 of 120 (2.50%), force magnitude 0 of 2400"
    b = Counts()
    b.merge(a)
    b.add(ENERGY, 1, 10)
    delta = b.minus(a)
    assert delta.outside == {ENERGY: 1, FORCE: 0} and delta.total == {ENERGY: 10, FORCE: 0}
    kinds = [ENERGY, FORCE]
    assert Counts.from_list(kinds, a.as_list(kinds)).to_dict() == a.to_dict()
    assert Counts().describe() == "no categorical targets seen"


def test_tally_sums_over_ranks_logs_each_epoch_and_writes_the_summary(tmp_path) -> None:
    """Two ranks (the reduce doubles what this rank saw): every line and the file carry
    the summed counts; the totals add up the epochs."""
    lines: list[str] = []
    tally = SupportTally(reduce=lambda values: [2 * v for v in values], log=lines.append)
    kinds = [ENERGY, FORCE]
    for epoch, (e_out, f_out) in enumerate([(2, 5), (1, 0)], 1):
        c = Counts()
        c.add(ENERGY, e_out, 12)
        c.add(FORCE, f_out, 300)
        tally.add_epoch("train", c, epoch, kinds)
    v = Counts()
    v.add(ENERGY, 0, 6)
    v.add(FORCE, 1, 150)
    tally.add_epoch("val", v, 2, kinds)
    assert lines == [
        "out of support (clamped to the edge bin), epoch 1 training: energy 4 of 24 "
        "(16.67%), force magnitude 10 of 600 (1.67%)",
        "out of support (clamped to the edge bin), epoch 2 training: energy 2 of 24 (8.33%), "
        "force magnitude 0 of 600",
        "out of support (clamped to the edge bin), epoch 2 validation: energy 0 of 12, "
        "force magnitude 2 of 300 (0.67%)",
    ]
    path = tally.finish(tmp_path / "run")
    assert path == tmp_path / "run" / SUMMARY_FILE
    summary = json.loads(path.read_text())
    assert summary["train"] == {ENERGY: {"outside": 6, "total": 48},
                                FORCE: {"outside": 10, "total": 1200}}
    assert summary["val"] == {ENERGY: {"outside": 0, "total": 12},
                              FORCE: {"outside": 2, "total": 300}}
    assert [e["epoch"] for e in summary["epochs"]["train"]] == [1, 2]
    assert lines[-1] == summary_line(summary)
    assert lines[-1] == (
        "targets outside the support (clamped to the edge bin) over the run: training: "
        "energy 6 of 48 (12.50%), force magnitude 10 of 1200 (0.83%); validation: energy 0 "
        "of 12, force magnitude 2 of 300 (0.67%)")
    said: list[str] = []
    assert report(tmp_path / "run", said.append) == summary == read_summary(tmp_path / "run")
    assert said == [f"{lines[-1]} (details: {path})"]


def test_tally_on_a_rank_that_does_not_write(tmp_path) -> None:
    tally = SupportTally(log=lambda _: None)
    assert tally.finish(tmp_path, write=False) is None
    assert read_summary(tmp_path) is None and report(tmp_path, print) is None


def test_histogram_loss_counts_only_the_targets_the_mask_keeps() -> None:
    """Masked samples (fill values for missing labels, fixed atoms) are not trained on, so
    they are not counted either; the count is cumulative over calls."""
    loss = HistogramLoss(HistogramSupport(-1.0, 1.0, 8))
    logits = torch.zeros(5, 8)
    y = torch.tensor([-3.0, 0.0, 2.0, 5.0, 0.5])
    mask = torch.tensor([True, True, True, False, True])
    loss(logits, y, mask)
    assert (loss.num_clipped, loss.num_targets) == (2, 4)
    loss(logits, y)
    assert (loss.num_clipped, loss.num_targets) == (5, 9)
    with pytest.raises(ValueError, match="match neither"):
        loss(logits, torch.zeros(4))
