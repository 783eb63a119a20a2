"""The pieces fairchem's MLIPTrainEvalUnit uses to train categorical heads.

CategoricalAseDBDataset targets, CategoricalLoss, HistogramDecoder, and fairchem's own
compute_loss / compute_metrics driven by the shipped task YAML. Expected numbers are
computed by hand from the ASE frames (numpy / scipy), never read back from the code.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from pathlib import Path

import hydra
import numpy as np
import pytest
import torch
from fairchem.core.datasets.mt_concat_dataset import create_concat_dataset
from fairchem.core.units.mlip_unit.mlip_unit import (
    compute_loss,
    compute_metrics,
    mt_collater_adapter,
)
from omegaconf import OmegaConf

from fairchem_categorical.data import write_aselmdb
from fairchem_categorical.fairchem2.dataset import CategoricalAseDBDataset
from fairchem_categorical.fairchem2.tasks import CategoricalLoss, HistogramDecoder
from fairchem_categorical.histogram import HistogramSupport
from tests.fairchem2.helpers import (
    DATASET,
    SUPPORT,
    build_model,
    np_centers,
    np_hl_gauss,
    np_log_softmax,
    np_probs,
    run,
    single_torch_thread,  # noqa: F401  (autouse fixture)
    small_frames,
)

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "configs" / "fairchem2"
K = SUPPORT["num_bins"]
COMMON = {
    "a2g_args": {"r_energy": True, "r_forces": True},
    "transforms": {"common_transform": {"dataset_name": DATASET}},
}


def _labels(atoms) -> tuple[float, np.ndarray]:
    results = atoms.calc.results
    return float(results["energy"]), np.asarray(results["forces"], dtype=np.float64)


def _targets_by_hand(frames, energy: dict) -> np.ndarray:
    refs = np.asarray(energy["element_references"], dtype=np.float64)
    out = []
    for atoms in frames:
        e, _ = _labels(atoms)
        referenced = e - refs[atoms.numbers].sum()
        if energy["level"] == "per_atom":
            referenced /= len(atoms)
        out.append((referenced - energy["mean"]) / energy["std"])
    return np.asarray(out)


@pytest.fixture(scope="module")
def frames():
    """2 systems x 2 frames (18 and 29 atoms)."""
    return small_frames(n_systems=2, frames_per_system=2)


@pytest.fixture(scope="module")
def data_folder(frames, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("categorical") / "train"
    write_aselmdb(frames, folder / "data.aselmdb")
    return folder


def _energy_spec(frames, level: str) -> dict:
    """Non-zero element references; mean and std of the referenced energies by hand."""
    refs = [0.0] * 100
    for z in sorted({int(z) for a in frames for z in a.numbers}):
        refs[z] = -0.05 * math.sqrt(z)
    spec = {"element_references": refs, "mean": 0.0, "std": 1.0, "level": level}
    raw = _targets_by_hand(frames, spec)
    return {**spec, "mean": float(raw.mean()), "std": float(raw.std())}


def _dataset(folder: Path, categorical: dict | None) -> CategoricalAseDBDataset:
    config = {"src": str(folder), **COMMON}
    if categorical is not None:
        config["categorical"] = categorical
    return CategoricalAseDBDataset(config)


# -- 5. CategoricalAseDBDataset -------------------------------------------------------


@pytest.mark.parametrize("level", ["per_atom", "total"])
def test_dataset_adds_binning_space_targets(frames, data_folder, level: str) -> None:
    energy = _energy_spec(frames, level)
    assert any(energy["element_references"])
    dataset = _dataset(data_folder, {"energy": energy, "support": SUPPORT})
    assert len(dataset) == len(frames)
    expected = _targets_by_hand(frames, energy)
    assert np.all((expected > SUPPORT["low"]) & (expected < SUPPORT["high"]))
    assert np.ptp(expected) > 1.0  # the four targets are not all alike
    support = HistogramSupport.from_spec(SUPPORT)
    for i, atoms in enumerate(frames):
        item = dataset[i]
        e, f = _labels(atoms)
        assert item.atomic_numbers.tolist() == atoms.numbers.tolist()
        assert float(item.energy) == pytest.approx(e, rel=1e-7)
        assert item.dataset == DATASET
        y = item["energy_categorical"]
        assert y.shape == (1,) and y.dtype == torch.float32
        assert float(y) == pytest.approx(expected[i], rel=1e-6, abs=1e-6)
        mag = item["force_magnitude"]
        assert mag.shape == (len(atoms),)
        np.testing.assert_allclose(mag.numpy(), np.linalg.norm(f, axis=1), rtol=1e-6,
                                   atol=1e-7)
        hist = item["energy_categorical_histogram"]
        assert hist.shape == (1, K)
        torch.testing.assert_close(hist, support.encode(y), rtol=0, atol=0)
        np.testing.assert_allclose(hist.double().numpy(), np_hl_gauss(SUPPORT, expected[i]),
                                   atol=2e-6)
    assert dataset.num_clipped == 0


def test_dataset_counts_and_clamps_targets_outside_support(frames, data_folder,
                                                          caplog) -> None:
    energy = _energy_spec(frames, "per_atom")
    narrow = {"low": -0.5, "high": 0.5, "num_bins": 8}
    dataset = _dataset(data_folder, {"energy": energy, "support": narrow})
    expected = _targets_by_hand(frames, energy)
    outside = int(((expected < -0.5) | (expected > 0.5)).sum())
    assert outside >= 1
    with caplog.at_level(logging.WARNING):
        items = [dataset[i] for i in range(len(dataset))]
    assert dataset.num_clipped == outside
    assert "outside the support" in caplog.text
    for item, y in zip(items, expected, strict=True):
        # The scalar target is untouched; only its histogram is clamped to the edge.
        assert float(item["energy_categorical"]) == pytest.approx(y, rel=1e-6, abs=1e-6)
        np.testing.assert_allclose(item["energy_categorical_histogram"].double().numpy(),
                                   np_hl_gauss(narrow, y), atol=2e-6)


@pytest.mark.parametrize("categorical", [None, {}, {"support": SUPPORT}],
                         ids=["no-block", "empty-block", "no-energy"])
def test_dataset_without_categorical_energy_block_raises(data_folder, categorical) -> None:
    with pytest.raises(ValueError, match="categorical"):
        _dataset(data_folder, categorical)


# -- 6. CategoricalLoss ---------------------------------------------------------------


@pytest.fixture(scope="module")
def dataset_targets(frames, data_folder) -> tuple[torch.Tensor, torch.Tensor]:
    dataset = _dataset(data_folder, {"energy": _energy_spec(frames, "per_atom"),
                                     "support": SUPPORT})
    items = [dataset[i] for i in range(len(dataset))]
    scalars = torch.cat([it["energy_categorical"] for it in items])
    hists = torch.cat([it["energy_categorical_histogram"] for it in items])
    return scalars, hists


def _logits(n: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return (2.0 * torch.randn(n, K, generator=gen)).requires_grad_(True)


def test_loss_same_for_scalar_and_histogram_targets(dataset_targets) -> None:
    scalars, hists = dataset_targets
    n = scalars.numel()
    natoms = torch.full((n,), 20)
    loss_fn = CategoricalLoss(SUPPORT, coefficient=1.5)
    logits = _logits(n)
    from_scalars = loss_fn(logits, scalars, torch.ones(n, dtype=torch.bool), natoms)
    from_hists = loss_fn(logits, hists, torch.ones(n, K, dtype=torch.bool), natoms)
    torch.testing.assert_close(from_scalars, from_hists, rtol=1e-6, atol=1e-6)
    ce = -(np_hl_gauss(SUPPORT, scalars.double().numpy()) * np_log_softmax(logits)).sum(-1)
    assert from_scalars.item() == pytest.approx(1.5 * ce.mean(), rel=1e-5)


@pytest.mark.parametrize("as_histogram", [False, True], ids=["scalar", "histogram"])
def test_loss_masks_missing_targets(dataset_targets, as_histogram: bool) -> None:
    scalars, hists = dataset_targets
    n = scalars.numel()
    keep = torch.tensor([True, False, True, False])[:n]
    coefficient = 2.5
    # fairchem's collater puts inf where a sample has no label for the task.
    if as_histogram:
        target = torch.where(keep.unsqueeze(-1), hists, torch.full_like(hists, math.inf))
    else:
        target = torch.where(keep, scalars, torch.full_like(scalars, math.inf))
    mult_mask = torch.isfinite(target)
    logits = _logits(n, seed=1)
    loss = CategoricalLoss(SUPPORT, coefficient=coefficient)(logits, target, mult_mask,
                                                            torch.full((n,), 20))
    assert torch.isfinite(loss) and loss.grad_fn is not None
    p = np_hl_gauss(SUPPORT, scalars.double().numpy())
    logq = np_log_softmax(logits)
    ce = -(p * logq).sum(-1)
    kept = keep.numpy()
    assert loss.item() == pytest.approx(coefficient * ce[kept].mean(), rel=1e-5)
    loss.backward()
    grad = logits.grad.double().numpy()
    assert np.isfinite(grad).all()
    # d(mean CE)/d logits = (softmax - target probs) / n_kept for kept rows, 0 otherwise.
    expected = coefficient * (np.exp(logq) - p) / kept.sum()
    expected[~kept] = 0.0
    np.testing.assert_allclose(grad, expected, atol=1e-6)
    assert np.abs(grad[kept]).max() > 1e-3


def test_loss_all_masked_is_zero_not_nan() -> None:
    logits = _logits(2)
    target = torch.full((2,), math.inf)
    loss = CategoricalLoss(SUPPORT)(logits, target, torch.isfinite(target), torch.tensor([5, 6]))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(logits.grad, torch.zeros_like(logits))


def test_loss_rejects_mismatched_sample_counts() -> None:
    with pytest.raises(ValueError, match="disagree"):
        CategoricalLoss(SUPPORT)(_logits(3), torch.zeros(2), torch.ones(2, dtype=torch.bool),
                                 torch.ones(3, dtype=torch.long))


# -- 7. HistogramDecoder --------------------------------------------------------------


def test_decoder_norm_is_identity_and_denorm_decodes_logits() -> None:
    decoder = HistogramDecoder(SUPPORT)
    y = torch.tensor([-1.0, 0.25, 3.5])
    torch.testing.assert_close(decoder.norm(y), y, rtol=0, atol=0)
    logits = _logits(5).detach()
    decoded = decoder.denorm(logits)
    assert decoded.shape == (5,)
    np.testing.assert_allclose(decoded.double().numpy(), np_probs(logits) @ np_centers(SUPPORT),
                               rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(decoded, HistogramSupport.from_spec(SUPPORT).mean(logits),
                               rtol=0, atol=0)


@pytest.mark.parametrize("n", [3, K], ids=["B=3", "B=num_bins"])
def test_decoder_denorm_passes_scalars_through(n: int) -> None:
    # A 1-D tensor holds one scalar per sample, whatever its length; with exactly
    # num_bins samples it must not be taken for a single histogram.
    decoder = HistogramDecoder(SUPPORT)
    values = torch.linspace(-2.0, 2.0, n)
    out = decoder.denorm(values)
    assert out.shape == (n,)
    torch.testing.assert_close(out, values, rtol=0, atol=0)


# -- 8. fairchem's compute_loss / compute_metrics with the shipped task YAML ----------


COEFFICIENTS = {"ce_coefficient": 2.0, "energy_coefficient": 3.0, "forces_coefficient": 10.0}


@pytest.fixture(scope="module")
def bins() -> dict:
    return OmegaConf.to_container(OmegaConf.load(CONFIGS / "bins" / "embedded.yaml"))


@pytest.fixture(scope="module")
def tasks(bins):
    root = OmegaConf.create({"bins": bins, **COEFFICIENTS})
    root.tasks = OmegaConf.load(CONFIGS / "tasks" / "categorical_conserving.yaml")
    return [hydra.utils.instantiate(t) for t in root.tasks]


@pytest.fixture(scope="module")
def concat_dataset(data_folder, bins):
    """Built like base_train.yaml's train_dataset, through fairchem's own factory."""
    config = {
        DATASET: {
            "splits": {"train": {"src": str(data_folder)}},
            "format": "fairchem_categorical.fairchem2.dataset.CategoricalAseDBDataset",
            **COMMON,
            "categorical": {"energy": bins["energy"]},
        }
    }
    return create_concat_dataset(
        dataset_configs=OmegaConf.create(config),
        combined_dataset_config=OmegaConf.create(
            {"sampling": {"type": "temperature", "temperature": 1.0}}),
    )


@pytest.fixture(scope="module")
def model(bins):
    return build_model(support=bins["support"], energy=bins["energy"]).train()


def _frames_in_batch(frames, batch) -> list:
    """The ASE frames in the batch's order (fairchem's concat dataset may reorder them),
    matched on the stored energy and composition."""
    order = []
    for i, e in enumerate(batch.energy.tolist()):
        j = int(np.argmin([abs(_labels(a)[0] - e) for a in frames]))
        assert _labels(frames[j])[0] == pytest.approx(e, rel=1e-6)
        assert int(batch.natoms[i]) == len(frames[j])
        order.append(j)
    assert sorted(order) == list(range(len(frames)))
    return [frames[j] for j in order]


def _by_hand(frames, bins, out, keep):
    """Per-system CE, decoded energies and energy errors, from logits and ASE labels."""
    support = bins["support"]
    refs = np.asarray(bins["energy"]["element_references"])
    logits = out["energy_categorical"]["logits"]
    y = _targets_by_hand(frames, bins["energy"])
    ce = -(np_hl_gauss(support, y) * np_log_softmax(logits)).sum(-1)
    decoded = np_probs(logits) @ np_centers(support)
    natoms = np.array([len(a) for a in frames], dtype=np.float64)
    e_true = np.array([_labels(a)[0] for a in frames])
    e_ref = np.array([refs[a.numbers].sum() for a in frames])
    e_pred = natoms * (decoded * bins["energy"]["std"] + bins["energy"]["mean"])
    return {"ce": ce[keep], "decoded_err": np.abs(decoded - y)[keep],
            "energy_err": np.abs(e_pred + e_ref - e_true), "natoms": natoms,
            "e_pred": e_pred, "e_target": e_true - e_ref}


def test_task_yaml_loss_and_metrics_on_real_batch(tasks, concat_dataset, model, frames,
                                                  bins) -> None:
    assert [t.name for t in tasks] == ["energy_categorical", "energy", "forces"]
    assert isinstance(tasks[0].normalizer, HistogramDecoder)
    assert isinstance(tasks[0].loss_fn, CategoricalLoss)
    assert len(concat_dataset) == len(frames)
    model.zero_grad()
    batch = mt_collater_adapter(tasks)([concat_dataset[i] for i in range(len(frames))])
    assert batch["energy_categorical"].shape == (len(frames),)
    out = run(model, batch)
    losses = compute_loss(tasks, out, batch)
    assert set(losses) == {"energy_categorical", "energy", "forces"}
    for name, loss in losses.items():
        assert loss.ndim == 0 and torch.isfinite(loss) and loss.grad_fn is not None, name

    frames = _frames_in_batch(frames, batch)
    hand = _by_hand(frames, bins, out, np.ones(len(frames), dtype=bool))
    assert losses["energy_categorical"].item() == pytest.approx(
        COEFFICIENTS["ce_coefficient"] * hand["ce"].mean(), rel=1e-5)
    per_atom = np.abs(hand["e_pred"] - hand["e_target"]) / hand["natoms"]
    assert losses["energy"].item() == pytest.approx(
        COEFFICIENTS["energy_coefficient"] * per_atom.mean(), rel=1e-5)
    free = batch.fixed.numpy() == 0
    f_true = np.concatenate([_labels(a)[1] for a in frames])
    f_err = np.linalg.norm(out["forces"]["forces"].detach().double().numpy() - f_true, axis=1)
    assert losses["forces"].item() == pytest.approx(
        COEFFICIENTS["forces_coefficient"] * f_err[free].mean(), rel=1e-5)

    sum(losses.values()).backward()
    backbone_grads = [p.grad for p in model.backbone.parameters() if p.grad is not None]
    assert backbone_grads and any(bool((g != 0).any()) for g in backbone_grads)

    metrics = {t.name: compute_metrics(t, out, batch) for t in tasks}
    energy_mae = metrics["energy"]["mae"]
    assert energy_mae.numel == len(frames)
    assert energy_mae.metric == pytest.approx(hand["energy_err"].mean(), rel=1e-5)
    assert metrics["energy"]["per_atom_mae"].metric == pytest.approx(
        (hand["energy_err"] / hand["natoms"]).mean(), rel=1e-5)
    assert metrics["energy_categorical"]["mae"].metric == pytest.approx(
        hand["decoded_err"].mean(), rel=1e-5)
    assert metrics["forces"]["mae"].numel == 3 * int(free.sum())


def test_task_yaml_loss_masks_systems_without_categorical_label(tasks, concat_dataset, model,
                                                                frames, bins) -> None:
    """A dataset without the categorical task in a mixed batch: fairchem's collater fills
    its target with inf; the categorical loss and metric ignore that system."""
    mixed = [dataclasses.replace(t, datasets=[DATASET, "other"])
             if t.name != "energy_categorical" else t for t in tasks]
    items = [concat_dataset[i] for i in range(len(frames))]
    items[1].dataset, items[1].dataset_name = "other", "other.train"
    batch = mt_collater_adapter(mixed)(items)
    model.zero_grad()
    target = batch["energy_categorical"]
    assert torch.isinf(target[1]) and torch.isfinite(target[[0, 2, 3]]).all()
    out = run(model, batch)
    losses = compute_loss(mixed, out, batch)
    assert all(torch.isfinite(v) for v in losses.values())
    keep = np.array([True, False, True, True])
    hand = _by_hand(_frames_in_batch(frames, batch), bins, out, keep)
    assert losses["energy_categorical"].item() == pytest.approx(
        COEFFICIENTS["ce_coefficient"] * hand["ce"].mean(), rel=1e-5)
    losses["energy_categorical"].backward()
    grads = [p.grad for p in model.output_heads["energy"].parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert any(bool((g != 0).any()) for g in grads)
    metric = compute_metrics(mixed[0], out, batch)["mae"]
    assert metric.numel == 3
    assert metric.metric == pytest.approx(hand["decoded_err"].mean(), rel=1e-5)
