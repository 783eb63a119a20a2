"""Targets outside the support while training: counted per epoch and per run, both lines.

A categorical head cannot predict beyond its support, so a training target outside it is
clamped to the edge bin (``HistogramSupport.encode``). That is fine for a few stragglers
and a sign of bins fitted on other data when it is many; either way the person training
must see how many. Each line's adapter gathers the counts where its training loop makes
them (fairchem-core 2.x: the ``CategoricalLoss`` counters, read by a runner callback;
1.10: per-item counts the dataset attaches, summed by the trainer), sums them over ranks,
and hands them to ``SupportTally``, which writes the log lines and the run's summary file
(``out_of_support.json``); ``train`` prints the summary's line at the end.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SUMMARY_FILE = "out_of_support.json"
#: the kinds of target a categorical head bins, as the log and the summary name them
ENERGY, FORCE = "energy", "force magnitude"
SPLITS = ("train", "val")


@dataclass
class Counts:
    """Targets seen and targets outside the support, per kind."""

    outside: dict[str, int] = field(default_factory=dict)
    total: dict[str, int] = field(default_factory=dict)

    def add(self, kind: str, outside: int, total: int) -> None:
        self.outside[kind] = self.outside.get(kind, 0) + int(outside)
        self.total[kind] = self.total.get(kind, 0) + int(total)

    def merge(self, other: Counts) -> None:
        for kind in other.total:
            self.add(kind, other.outside.get(kind, 0), other.total[kind])

    def minus(self, earlier: Counts) -> Counts:
        out = Counts()
        for kind in self.total:
            out.add(kind, self.outside.get(kind, 0) - earlier.outside.get(kind, 0),
                    self.total[kind] - earlier.total.get(kind, 0))
        return out

    def kinds(self) -> list[str]:
        return sorted(self.total)

    def as_list(self, kinds: list[str]) -> list[int]:
        """Flat [outside, total] per kind, for one all-reduce."""
        return [n for k in kinds for n in (self.outside.get(k, 0), self.total.get(k, 0))]

    @classmethod
    def from_list(cls, kinds: list[str], values: list[int]) -> Counts:
        out = cls()
        for i, kind in enumerate(kinds):
            out.add(kind, values[2 * i], values[2 * i + 1])
        return out

    def describe(self) -> str:
        """``energy 3 of 120 (2.50%), force magnitude 0 of 2400``."""
        parts = []
        for kind in self.kinds():
            n, total = self.outside.get(kind, 0), self.total[kind]
            share = f" ({100.0 * n / total:.2f}%)" if n and total else ""
            parts.append(f"{kind} {n} of {total}{share}")
        return ", ".join(parts) if parts else "no categorical targets seen"

    def to_dict(self) -> dict[str, dict[str, int]]:
        return {k: {"outside": self.outside.get(k, 0), "total": self.total[k]}
                for k in self.kinds()}


Reduce = Callable[[list[int]], list[int]]


class SupportTally:
    """Per-epoch and whole-run counts of clamped targets, for train and validation.

    ``add_epoch(split, counts)`` takes one rank's counts of one epoch (or one validation
    pass); ``reduce`` sums a flat list over ranks (identity on one process), so every
    rank logs and the first writes the same, DDP-correct numbers. Call it on every rank.
    """

    def __init__(self, reduce: Reduce | None = None,
                 log: Callable[[str], None] = logging.info) -> None:
        self.reduce = reduce or (lambda values: values)
        self.log = log
        self.epochs: dict[str, list[dict[str, Any]]] = {s: [] for s in SPLITS}
        self.totals = {s: Counts() for s in SPLITS}

    def add_epoch(self, split: str, counts: Counts, epoch: int, kinds: list[str]) -> Counts:
        """Sum ``counts`` over ranks, log the line, keep it; returns the summed counts."""
        summed = Counts.from_list(kinds, [int(v) for v in self.reduce(counts.as_list(kinds))])
        self.totals[split].merge(summed)
        self.epochs[split].append({"epoch": epoch, **summed.to_dict()})
        what = "training" if split == "train" else "validation"
        self.log(f"out of support (clamped to the edge bin), epoch {epoch} {what}: "
                 f"{summed.describe()}")
        return summed

    def summary(self) -> dict[str, Any]:
        return {"train": self.totals["train"].to_dict(), "val": self.totals["val"].to_dict(),
                "epochs": self.epochs}

    def finish(self, run_folder: str | Path | None, write: bool = True) -> Path | None:
        """Log the whole run's line; write the summary file (on one rank: ``write``)."""
        self.log(summary_line(self.summary()))
        if run_folder is None or not write:
            return None
        path = Path(run_folder) / SUMMARY_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.summary(), indent=2))
        return path


def summary_line(summary: Mapping[str, Any]) -> str:
    """One line for a person: what training and validation clamped over the whole run."""
    parts = []
    for split, what in (("train", "training"), ("val", "validation")):
        counts = Counts()
        for kind, c in (summary.get(split) or {}).items():
            counts.add(kind, c["outside"], c["total"])
        if counts.total:
            parts.append(f"{what}: {counts.describe()}")
    text = "; ".join(parts) if parts else "no categorical targets were counted"
    return f"targets outside the support (clamped to the edge bin) over the run: {text}"


def read_summary(run_folder: str | Path) -> dict[str, Any] | None:
    """The summary a run wrote, or None (a scalar model writes none)."""
    path = Path(run_folder) / SUMMARY_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def report(run_folder: str | Path, say: Callable[[str], None] | None) -> dict[str, Any] | None:
    """Say the run's summary line (``train`` does, before the checkpoint's path)."""
    summary = read_summary(run_folder)
    if summary is not None and say is not None:
        say(f"{summary_line(summary)} (details: {Path(run_folder) / SUMMARY_FILE})")
    return summary
