"""Two ranks through fairchem 1.10's own distributed path (``--cpu --num-gpus 2``: torch
elastic with gloo), the categorical eSEN config against the same global batch on one rank.

fairchem 1.10 logs only rank 0's loss (its share of the global mean times the world size),
so the comparison is what one optimiser step made of the gradients: with plain SGD
(lr 1, no weight decay) the weights after the first step are ``w0 - g``, and they (and
the validation metrics computed with them) must match the one-rank run's. The training
set holds one structure four times the size of the others, so fairchem's atom-balanced
sampler gives the ranks different numbers of structures, where a per-rank mean of the
cross-entropy would weigh them wrongly.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from ase.calculators.singlepoint import SinglePointCalculator

from tests.conftest import REPO

pytestmark = pytest.mark.slow

CONFIG = REPO / "configs" / "fairchem1" / "esen_categorical_conserving.yml"
TINY = ["--model.backbone.sphere_channels=16", "--model.backbone.hidden_channels=16",
        "--model.backbone.edge_channels=16", "--model.backbone.lmax=1",
        "--model.backbone.mmax=1", "--model.backbone.num_distance_basis=32"]
SGD = ["--optim.optimizer=SGD", "--optim.lr_initial=1.0",
       "--optim.optimizer_params.weight_decay=0", "--optim.ema_decay=0.0"]


def _big(atoms):
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
    from fairchem_categorical.data.pyg_lmdb import write_pyg_lmdb

    root = tmp_path_factory.mktemp("multirank1")
    frames = generate_frames(n_systems=4, frames_per_system=3, seed=5)
    train = [_big(frames[0]), *frames[1:8]]  # one global batch of 8
    out = {"natoms": [len(a) for a in train]}
    for split, chunk in (("train", train), ("val", frames[8:])):
        out[split] = write_pyg_lmdb(chunk, root / split / "data.lmdb").parent
    fit = fit_bins_files([out["train"]], num_bins=64)
    out["bins"] = write_bins(fit, root / "bins.yaml", [out["train"]])
    return out


def _train(data, run_dir: Path, ranks: int) -> dict:
    from fairchem_categorical.app.jobs import train

    ckpt = train(CONFIG, str(data["train"]), str(data["val"]), bins=data["bins"],
                 max_epochs=1, run_dir=run_dir,
                 overrides=[f"--num-gpus={ranks}", f"--optim.batch_size={8 // ranks}",
                            f"--optim.eval_batch_size={8 // ranks}", *SGD, *TINY])
    return torch.load(ckpt, map_location="cpu", weights_only=False)


def test_two_ranks_take_the_one_rank_step(data, tmp_path):
    from fairchem.core.common.data_parallel import _balanced_partition

    parts = _balanced_partition(np.array(data["natoms"]), num_parts=2)
    assert sorted(len(p) for p in parts) != [4, 4]  # uneven structures per rank

    one = _train(data, tmp_path / "one", ranks=1)
    two = _train(data, tmp_path / "two", ranks=2)
    assert one["step"] == two["step"] == 1
    for name, w1 in one["state_dict"].items():
        if not (torch.is_tensor(w1) and w1.is_floating_point()):
            continue
        w2 = two["state_dict"][name]
        scale = float(w1.abs().max()) or 1.0
        np.testing.assert_allclose(w2.double().numpy(), w1.double().numpy(), rtol=0,
                                   atol=1e-5 * scale, err_msg=name)
    # validation after the step (all-reduced over the ranks) agrees too
    val_one, val_two = _validation(tmp_path / "one"), _validation(tmp_path / "two")
    assert set(val_one) >= {"loss", "energy_mae", "forces_mae"}
    for key, value in val_one.items():
        assert val_two[key] == pytest.approx(value, rel=1e-3, abs=1e-4), key


def _validation(run_dir: Path) -> dict[str, float]:
    """The metrics of fairchem's last validation log line ("energy_mae: ..., epoch: 1.0")."""
    log = next(run_dir.glob("*.log")).read_text()
    line = [ln for ln in log.splitlines() if "energy_mae:" in ln and "lr:" not in ln][-1]
    pairs = (kv.split(": ") for kv in line.split("(INFO): ", 1)[1].split(", "))
    return {k: float(v) for k, v in pairs if k != "epoch"}
