"""The fairchem-core 2.x heads, loss and decoder work on their input's device.

fairchem's training unit moves the model and a task's element references to the GPU, but
not the task's loss or normalizer: ``CategoricalLoss`` and ``HistogramDecoder`` keep their
supports on the CPU while logits and targets are on CUDA. Run on the ``meta`` device (and
on CUDA when there is one); any tensor made elsewhere fails the test.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from fairchem_categorical.fairchem2.tasks import CategoricalLoss, HistogramDecoder
from tests.fairchem2.helpers import SUPPORT, build_model
from tests.reference import heads_outputs_on, watch_devices

DEVICES = ["meta"] + (["cuda"] if torch.cuda.is_available() else [])
K = SUPPORT["num_bins"]


@pytest.fixture
def boolean_indexing_on_meta() -> Iterator[None]:
    """fairchem's loss reduction indexes with a mask, whose size meta tensors cannot know."""
    import torch.fx.experimental._config as fx_config

    with fx_config.patch(meta_nonzero_assume_all_nonzero=True):
        yield


def _batch(device: str) -> dict[str, torch.Tensor]:
    return {"batch": torch.tensor([0, 0, 0, 1, 1]).to(device),
            "natoms": torch.tensor([3, 2]).to(device),
            "atomic_numbers": torch.tensor([1, 6, 8, 29, 29]).to(device),
            "pos": torch.randn(5, 3).to(device).requires_grad_(),
            "cell": torch.eye(3).expand(2, 3, 3).to(device)}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("direct", [False, True])
def test_heads_on_the_inputs_device(device: str, direct: bool) -> None:
    model = build_model(direct_forces=direct, head_weight_std=0.5)
    heads = {name: head.to(device) for name, head in model.output_heads.items()}
    data = _batch(device)
    # l=0,1 node embeddings that depend on the positions, so conservative forces exist
    node = torch.randn(5, 4, 8).to(device) + data["pos"].sum() * 0.1
    out = heads_outputs_on(device, heads.values(), data, node)
    assert {"energy", "energy_categorical", "forces"} <= set(out)
    for task, values in out.items():
        for name, value in values.items():
            assert value.device.type == device, (task, name)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("target", ["scalar", "histogram"])
def test_loss_and_decoder_keep_their_support_on_the_cpu(
        device: str, target: str, boolean_indexing_on_meta: None) -> None:
    loss_fn, decoder = CategoricalLoss(SUPPORT, l1_weight=0.5), HistogramDecoder(SUPPORT)
    assert loss_fn.loss_fn.support.edges.device.type == "cpu"  # as fairchem leaves them
    logits = torch.randn(4, K).to(device)
    y = torch.randn(4)
    if target == "histogram":
        y = loss_fn.loss_fn.support.encode(y)
    y, mask = y.to(device), torch.tensor([True, False, True, True]).to(device)
    natoms = torch.tensor([3, 2, 4, 1]).to(device)
    with watch_devices(device) as elsewhere:
        loss = loss_fn(logits, y, mask, natoms)
        decoded = decoder.denorm(logits)
    assert elsewhere == []
    assert loss.device.type == device and loss.shape == ()
    assert decoded.device.type == device and decoded.shape == (4,)

