"""Two ranks through fairchem's own local launcher (torch elastic, gloo on the CPU).

The categorical conserving config trains with ``job.scheduler.ranks_per_node=2`` and 4
structures per rank; the same global batch on one rank (8 structures) must give the same
first-step loss and gradients. fairchem's ``debug_checksums_save_path`` writes each
rank's loss and per-parameter mean |gradient| after the (all-reduced) backward. Each
rank's loss is its share of the global mean times the world size (fairchem's DDP
reduction), so the ranks' mean is the global loss. The training set holds one
structure four times the size of the others, so fairchem's atom-balanced sampler gives
the two ranks different numbers of structures: a per-rank mean of the cross-entropy would
then differ from the global one.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import numpy as np
import pytest
from ase.calculators.singlepoint import SinglePointCalculator

from tests.conftest import CONFIGS, TINY_BACKBONE

pytestmark = pytest.mark.slow


def _big(atoms):
    """A 2x2 in-plane repeat: four times the atoms, the energy and the tiled forces."""
    big = atoms.repeat((2, 2, 1))
    results = atoms.calc.results
    big.calc = SinglePointCalculator(big, energy=4 * results["energy"],
                                     forces=np.tile(results["forces"], (4, 1)))
    big.info = dict(atoms.info)
    return big


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    from fairchem_categorical.bins import fit_bins_files, write_bins
    from fairchem_categorical.data import generate_frames
    from fairchem_categorical.data.aselmdb import write_aselmdb

    root = tmp_path_factory.mktemp("multirank")
    frames = generate_frames(n_systems=4, frames_per_system=3, seed=5)
    train = [_big(frames[0]), *frames[1:8]]  # one global batch of 8
    out = {}
    for split, chunk in (("train", train), ("val", frames[8:])):
        out[split] = write_aselmdb(chunk, root / split / "data.aselmdb").parent
    fit = fit_bins_files([out["train"]], num_bins=64)
    out["bins"] = write_bins(fit, root / "bins.yaml", [out["train"]])
    return out


def _train(data, run_dir: Path, ranks: int) -> tuple[Path, Path]:
    from fairchem_categorical.app.jobs import train

    checksums = run_dir / "checksums"
    ckpt = train(CONFIGS / "esen_categorical_conserving.yaml", str(data["train"]),
                 str(data["val"]), bins=data["bins"], max_epochs=1, run_dir=run_dir,
                 overrides=[f"job.scheduler.ranks_per_node={ranks}", f"batch_size={8 // ranks}",
                            f"+runner.train_eval_unit.debug_checksums_save_path={checksums}",
                            "runner.train_eval_unit.print_every=1", *TINY_BACKBONE])
    return ckpt, checksums


def _checksums(path: Path) -> tuple[float, dict[str, float]]:
    lines = path.read_text().splitlines()
    loss = float(lines[0].split(",")[1])
    grads = {name: float(v) for kind, _, name, v in (ln.split(",") for ln in lines[1:])
             if kind == "Grad"}
    return loss, grads


def _samples_per_rank(run_dir: Path) -> list[int]:
    """train/num_samples_on_rank of step 0, from each rank's log line."""
    text = next(run_dir.glob("*/train.log")).read_text()
    logged = [ast.literal_eval(m) for m in re.findall(r"\{'train/loss'.*?\}", text)]
    return sorted(d["train/num_samples_on_rank"] for d in logged if d["train/step"] == 0)


def test_two_ranks_give_the_one_rank_loss_and_gradients(data, tmp_path):
    from fairchem_categorical.data import read_frames
    from fairchem_categorical.fairchem2.predict import predict_atoms

    ckpt1, sums1 = _train(data, tmp_path / "one", ranks=1)
    ckpt2, sums2 = _train(data, tmp_path / "two", ranks=2)

    counts = _samples_per_rank(tmp_path / "two")
    assert sum(counts) == 8 and counts[0] != counts[1], counts  # uneven: the test bites
    assert _samples_per_rank(tmp_path / "one") == [8]

    loss1, grads1 = _checksums(sums1 / "ddp1.0_gp0.0_step0.txt")
    rank_losses, rank_grads = zip(*(_checksums(sums2 / f"ddp2.{r}_gp0.0_step0.txt")
                                    for r in (0, 1)), strict=True)
    assert rank_losses[0] != pytest.approx(rank_losses[1], rel=1e-3)  # different shares
    # fairchem's DDP reduction: each rank holds sum_local * world / global count
    assert np.mean(rank_losses) == pytest.approx(loss1, rel=1e-5)
    # after DDP's all-reduce both ranks hold the gradients of the global batch (at step 0
    # only the output layer's: it starts at zero weights, so nothing flows past it yet)
    names = [n for n, g in grads1.items() if g > 1e-8]
    assert {n.rsplit(".", 2)[-2] for n in names} >= {"location", "scale", "residual"}
    for grads in rank_grads:
        np.testing.assert_allclose([grads[n] for n in names], [grads1[n] for n in names],
                                   rtol=1e-3, atol=1e-7)

    preds = predict_atoms(ckpt2, read_frames([data["val"]]))
    assert all(np.isfinite(p.energy) and p.energy_std > 0 for p in preds)
    assert ckpt1.is_file()
