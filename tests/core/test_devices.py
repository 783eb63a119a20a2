"""Everything the method computes lives on its input's device.

fairchem moves a model to the GPU but not a task's loss or normalizer, so their supports
stay on the CPU while logits and targets are on CUDA. These tests run the losses, decoders
and readouts on the ``meta`` device (and on CUDA when there is one) with the support on
the CPU, and fail when an op makes a tensor anywhere else than the input's device.
"""

from __future__ import annotations

import pytest
import torch

from fairchem_categorical.histogram import HistogramSupport
from fairchem_categorical.logits import LocationScaleLogits
from fairchem_categorical.losses import HistogramLoss, soft_cross_entropy
from fairchem_categorical.readout import CategoricalEnergyReadout, ForceMagnitudeReadout
from tests.reference import ENERGY, FORCE_SUPPORT, SUPPORT, watch_devices

DEVICES = ["meta"] + (["cuda"] if torch.cuda.is_available() else [])


def _randn(*shape: int, device: str) -> torch.Tensor:
    return torch.randn(*shape).to(device)


@pytest.mark.parametrize("device", DEVICES)
def test_support_on_the_cpu_decodes_inputs_on_their_device(device: str) -> None:
    support = HistogramSupport(**SUPPORT)  # stays on the CPU, like a task's normalizer
    logits = _randn(5, SUPPORT["num_bins"], device=device)
    with watch_devices(device) as elsewhere:
        outs = {name: getattr(support, name)(logits)
                for name in ("probs", "log_probs", "mean", "mode", "std", "entropy",
                             "edge_mass", "median")}
        outs.update({f"decode_{k}": v
                     for k, v in support.decode_with_uncertainty(logits).items()})
        lo, hi = support.interval(logits)
        outs.update(low=lo, high=hi)
    assert elsewhere == []
    for name, value in outs.items():
        assert value.device.type == device, name
        assert value.shape[0] == 5, name


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("encoding", ["hl_gauss", "two_hot", "one_hot"])
def test_encoding_gives_histograms_on_the_targets_device(device: str, encoding: str) -> None:
    support = HistogramSupport(**SUPPORT)
    y = _randn(7, device=device)
    with watch_devices(device) as elsewhere:
        probs, outside = support.encode_counting(y, encoding)
    assert elsewhere == []
    assert probs.device.type == device and probs.shape == (7, SUPPORT["num_bins"])
    assert outside == 0


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("target", ["scalar", "histogram"])
def test_histogram_loss_on_the_inputs_device(device: str, target: str) -> None:
    support = HistogramSupport(**SUPPORT)
    loss_fn = HistogramLoss(support, ce_weight=1.0, l1_weight=0.5)
    logits = _randn(6, SUPPORT["num_bins"], device=device)
    y = _randn(6, device=device)
    if target == "histogram":
        y = support.encode(torch.randn(6)).to(device)
    mask = torch.tensor([True, True, False, True, True, True]).to(device)
    with watch_devices(device) as elsewhere:
        loss = loss_fn(logits, y, mask)
        ce = soft_cross_entropy(logits, torch.softmax(logits, -1))
    assert elsewhere == []
    assert loss.device.type == device and loss.shape == (6,)
    assert ce.device.type == device


@pytest.mark.parametrize("device", DEVICES)
def test_readouts_on_the_inputs_device(device: str) -> None:
    energy = CategoricalEnergyReadout(4, 8, SUPPORT, ENERGY).to(device)
    force = ForceMagnitudeReadout(4, 8, FORCE_SUPPORT).to(device)
    x = _randn(5, 4, device=device)
    batch, natoms = torch.tensor([0, 0, 0, 1, 1]).to(device), torch.tensor([3, 2]).to(device)
    refs = torch.zeros(2, dtype=torch.float64).to(device)
    numbers, vector = torch.ones(5).long().to(device), _randn(5, 3, device=device)
    energy.eval()
    with watch_devices(device) as elsewhere:
        logits, out = energy.energy_outputs(x, batch, natoms, numbers)
        out.update(energy.histogram_in_ev(logits, natoms, refs))
        out.update(force.readout(x, vector))
    assert elsewhere == []
    for name, value in out.items():
        assert value.device.type == device, name


@pytest.mark.parametrize("device", DEVICES)
def test_logits_layer_with_its_support_left_on_the_cpu(device: str) -> None:
    support = HistogramSupport(**SUPPORT)
    layer = LocationScaleLogits(4, support)
    for child in ("location", "scale", "residual"):
        getattr(layer, child).to(device)  # the layers moved, the shared support not
    x = _randn(3, 4, device=device)
    with watch_devices(device) as elsewhere:
        logits = layer(x)
    assert elsewhere == []
    assert logits.device.type == device and logits.shape == (3, SUPPORT["num_bins"])


def test_the_watch_catches_a_tensor_made_on_the_cpu() -> None:
    with watch_devices("meta") as elsewhere:
        torch.randn(3, device="meta") + 1.0
        torch.arange(3)
    assert [op for op, _ in elsewhere] == ["aten.arange.default"]
