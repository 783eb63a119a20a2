"""The fairchem-core 1.10 heads and loss work on their input's device.

Run on the ``meta`` device (and on CUDA when there is one); any tensor an op makes
elsewhere fails the test (``tests/core/test_devices.py`` covers the core they share).
"""

from __future__ import annotations

import pytest
import torch

from fairchem_categorical.fairchem1.losses import CategoricalCrossEntropyLoss
from tests.fairchem1.helpers import categorical_model, eqv2_backbone, esen_backbone
from tests.reference import SUPPORT, heads_outputs_on, watch_devices

DEVICES = ["meta"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("direct", [False, True], ids=["esen_gradient", "eqv2_direct"])
def test_heads_on_the_inputs_device(device: str, direct: bool) -> None:
    model = categorical_model(eqv2_backbone() if direct else esen_backbone(), direct)
    heads = {name: head.to(device) for name, head in model.output_heads.items()}
    data = {"batch": torch.tensor([0, 0, 0, 1, 1]).to(device),
            "natoms": torch.tensor([3, 2]).to(device),
            "atomic_numbers": torch.tensor([1, 6, 8, 29, 29]).to(device),
            "pos": torch.randn(5, 3).to(device).requires_grad_()}
    channels = model.backbone.sphere_channels
    # l=0,1 coefficients that depend on the positions, so gradient forces exist
    node = torch.randn(5, 4, channels).to(device) + data["pos"].sum() * 0.1
    out = heads_outputs_on(device, heads.values(), data, node)
    assert {"energy", "energy_categorical", "forces"} <= set(out)
    for name, value in out.items():
        assert value.device.type == device, name


@pytest.mark.parametrize("device", DEVICES)
def test_loss_on_the_inputs_device(device: str) -> None:
    k = SUPPORT["num_bins"]
    logits = torch.randn(4, k).to(device)
    target = torch.softmax(torch.randn(4, k), -1).to(device)
    natoms = torch.ones(4).to(device)
    with watch_devices(device) as elsewhere:
        loss = CategoricalCrossEntropyLoss()(logits, target, natoms)
    assert elsewhere == [] and loss.device.type == device and loss.shape == (4,)
