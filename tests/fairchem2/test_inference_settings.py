"""The categorical heads under fairchem 2.x's inference settings (``MLIPPredictUnit``).

Each preset either gives the numbers the plain "batch" settings give (merged MOLE experts,
``torch.compile``, another graph generator) or is refused with a message naming it;
float64 and bf16 autocast stay finite and decode histograms in float32 or better.
Reference numbers come from the same checkpoint under "batch"; the float64 decoding is
checked against numpy.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
import yaml
from fairchem.core.datasets.atomic_data import atomicdata_list_to_batch
from fairchem.core.models.uma.escn_md import eSCNMDBackbone
from fairchem.core.models.uma.escn_moe import eSCNMDMoeBackbone
from fairchem.core.units.mlip_unit.api.inference import InferenceSettings

from fairchem_categorical.fairchem2.predict import (
    PRESETS,
    load_unit,
    predict_atoms,
    predict_batch,
    to_data,
)
from tests.conftest import CONFIGS
from tests.fairchem2.helpers import (
    DATASET,
    config_checkpoint,
    np_probs,
    single_torch_thread,  # noqa: F401  (autouse fixture)
    small_frames,
)
from tests.reference import assert_within, energy_float32_atol

EMBEDDED_BINS = yaml.safe_load((CONFIGS / "bins" / "embedded.yaml").read_text())

KEYS = ("energy_std", "energy_entropy", "energy_edge_mass", "energy_low90", "energy_high90",
        "energy_probs")


@pytest.fixture(scope="module")
def uma_ckpt(tmp_path_factory):
    return config_checkpoint("uma_categorical_conserving.yaml",
                             tmp_path_factory.mktemp("uma") / "uma.pt")


@pytest.fixture(scope="module")
def esen_ckpt(tmp_path_factory):
    return config_checkpoint("esen_categorical_conserving.yaml",
                             tmp_path_factory.mktemp("esen") / "esen.pt")


@pytest.fixture(scope="module")
def one_composition():
    """Three frames of one relaxation: one composition, what merge_mole needs."""
    return small_frames(n_systems=1, frames_per_system=3)


def _predict(ckpt, frames, settings, **kw):
    unit = load_unit(ckpt, inference_settings=settings)
    batch = atomicdata_list_to_batch([to_data(a, DATASET) for a in frames])
    out, extras = predict_batch(unit, batch, seed=0, **kw)
    return unit, out, extras


def _assert_same(a, b, rtol=1e-4, atol=1e-6):
    """Same energies and uncertainties; forces to 1e-3 of the largest force component
    (float32 sums in another order: merged expert weights, compiled kernels)."""
    (out_a, ex_a), (out_b, ex_b) = a, b
    np.testing.assert_allclose(out_a["energy"].numpy(), out_b["energy"].numpy(), rtol=rtol,
                               atol=atol)
    f_a, f_b = out_a["forces"].double().numpy(), out_b["forces"].double().numpy()
    np.testing.assert_allclose(f_a, f_b, rtol=0, atol=1e-3 * np.abs(f_b).max())
    for key in KEYS:
        np.testing.assert_allclose(ex_a[key].double().numpy(), ex_b[key].double().numpy(),
                                   rtol=rtol, atol=atol, err_msg=key)


@pytest.mark.parametrize("config", ["uma_categorical_conserving.yaml",
                                    "uma_scalar_conserving.yaml"])
def test_merge_mole_gives_the_unmerged_numbers(config, one_composition, tmp_path):
    """merge_mole folds UMA's experts into one backbone for a fixed composition: the
    categorical energies, forces and uncertainties stay those of the unmerged model (and
    fairchem's own scalar head, which the merge breaks in fairchem itself, works too)."""
    ckpt = config_checkpoint(config, tmp_path / "m.pt")
    plain, *ref = _predict(ckpt, one_composition, "batch")
    merged, *got = _predict(ckpt, one_composition,
                            InferenceSettings(merge_mole=True, compile=False,
                                              activation_checkpointing=False))
    assert isinstance(plain.hydra_model.backbone, eSCNMDMoeBackbone)
    assert type(merged.hydra_model.backbone) is eSCNMDBackbone  # the experts were merged
    if "categorical" in config:
        _assert_same(ref, got)
        assert float(ref[1]["energy_std"].min()) > 0
    else:
        np.testing.assert_allclose(got[0]["energy"].numpy(), ref[0]["energy"].numpy(),
                                   rtol=1e-5)


def test_merge_mole_with_mixed_compositions_falls_back_to_the_unmerged_model(uma_ckpt,
                                                                            caplog):
    frames = small_frames(n_systems=2, frames_per_system=1)
    assert frames[0].get_chemical_formula() != frames[1].get_chemical_formula()
    _, *ref = _predict(uma_ckpt, frames, "batch")
    with caplog.at_level(logging.WARNING):
        unit, *got = _predict(uma_ckpt, frames, "high-precision")
    assert "Use inference_settings='batch' for heterogeneous batched evaluations" in caplog.text
    assert not unit.inference_settings.merge_mole and not unit.inference_settings.compile
    _assert_same(ref, got)


def test_traineval_settings_give_the_batch_numbers(esen_ckpt, one_composition):
    _, *ref = _predict(esen_ckpt, one_composition, "batch")
    _, *got = _predict(esen_ckpt, one_composition, "traineval")
    _assert_same(ref, got)


def test_float64_predictions_decode_in_float64(uma_ckpt, one_composition):
    _, *ref = _predict(uma_ckpt, one_composition, "batch")
    unit, out, extras = _predict(uma_ckpt, one_composition,
                                 InferenceSettings(base_precision_dtype=torch.float64))
    logits = unit.last_outputs["energy_categorical"]["logits"]
    assert logits.dtype == torch.float64 and out["forces"].dtype == torch.float64
    assert extras["energy_probs"].dtype == torch.float64
    for value in (out["energy"], out["forces"], *(extras[k] for k in KEYS)):
        assert torch.isfinite(value).all()
    # the histogram decodes in float64: probabilities and std by hand from the logits
    np.testing.assert_allclose(extras["energy_probs"].numpy(), np_probs(logits), rtol=1e-12,
                               atol=1e-15)
    _assert_same(ref, (out, extras), rtol=1e-4, atol=1e-5)


def test_bf16_autocast_predictions_stay_finite_and_decode_in_float32(uma_ckpt,
                                                                     one_composition):
    _, *ref = _predict(uma_ckpt, one_composition, "batch")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        unit, out, extras = _predict(uma_ckpt, one_composition, "batch")
    assert unit.last_outputs["energy_categorical"]["logits"].dtype == torch.float32
    assert extras["energy_probs"].dtype == torch.float32
    for value in (out["energy"], out["forces"], *(extras[k] for k in KEYS)):
        assert torch.isfinite(value).all()
    np.testing.assert_allclose(out["energy"].numpy(), ref[0]["energy"].numpy(), rtol=2e-2)


def test_unknown_and_retired_presets_are_refused_by_name(esen_ckpt, one_composition):
    with pytest.raises(ValueError, match="unknown inference settings 'fast'.*batch"):
        load_unit(esen_ckpt, inference_settings="fast")
    with pytest.raises(ValueError, match="turbo"):
        load_unit(esen_ckpt, inference_settings="turbo")
    assert {"default", "batch", "high-precision", "multigpu", "traineval"} <= set(PRESETS)


def test_predict_atoms_takes_a_preset(esen_ckpt, one_composition):
    """"traineval" gives the "batch" numbers up to float32 summation order (the bound of
    the shipped bins the checkpoint was composed with)."""
    a = predict_atoms(esen_ckpt, one_composition, batch_size=2)
    b = predict_atoms(esen_ckpt, one_composition, batch_size=2, inference_settings="traineval")
    atol = energy_float32_atol([len(f) for f in one_composition], EMBEDDED_BINS)
    assert np.all(atol < 1e-5 * np.array([p.natoms for p in a]))  # sees 0.01 meV/atom
    for key in ("energy", "energy_std", "energy_low90", "energy_high90"):
        assert_within([getattr(p, key) for p in a], [getattr(p, key) for p in b], atol, key)


@pytest.mark.slow
@pytest.mark.parametrize(("preset", "model"), [("high-precision", "uma"), ("default", "esen")])
def test_compiled_model_gives_the_batch_numbers(preset, model, request, one_composition):
    """fairchem's compile path on the CPU: "high-precision" merges UMA's experts and
    compiles the merged model; "default" asks for UMA Nitro, which refuses these weights,
    so fairchem runs multigpu (merge_mole + compile) instead."""
    ckpt = request.getfixturevalue(f"{model}_ckpt")
    _, *ref = _predict(ckpt, one_composition, "batch")
    unit, *got = _predict(ckpt, one_composition, preset)
    assert unit.inference_settings.compile and not unit.inference_settings.nitro
    assert hasattr(unit.model, "_orig_mod")  # torch.compile's wrapper
    if model == "uma":
        assert type(unit.hydra_model.backbone) is eSCNMDBackbone  # merged, then compiled
    _assert_same(ref, got, rtol=1e-4, atol=1e-5)


def test_predict_command_takes_inference_settings(tmp_path, capsys):
    """The CLI's --inference-settings reaches fairchem: a legacy checkpoint predicts its
    recorded numbers under "traineval" too; a name fairchem lacks exits with a clear error."""
    from fairchem_categorical.app.cli import main
    from fairchem_categorical.data import read_frames
    from fairchem_categorical.predictions import load_predictions
    from tests.reference import LEGACY

    folder = LEGACY / "fairchem2"
    args = ["predict", "--checkpoint", str(folder / "esen_categorical_conserving.pt"),
            str(folder / "frames.extxyz"), "--out", str(tmp_path / "p.csv")]
    assert main([*args, "--inference-settings", "traineval"]) == 0
    got, _ = load_predictions(tmp_path / "p.csv")
    want, _ = load_predictions(folder / "esen_categorical_conserving.ema.csv")
    assert len(got["energy"]) == len(read_frames([folder / "frames.extxyz"]))
    for key in ("energy", "energy_std", "energy_low90", "energy_high90", "forces_mae"):
        np.testing.assert_allclose(got[key], want[key], rtol=1e-6, atol=1e-6, err_msg=key)
    assert main([*args, "--inference-settings", "fastest"]) == 2
    assert "unknown inference settings 'fastest'" in capsys.readouterr().err


def test_predictions_do_not_depend_on_the_batch_size():
    """predict batches structures into one graph; every structure's numbers stay those it
    gets alone (up to float32 summation order and the seeded edge-frame roll)."""
    from fairchem_categorical.data import read_frames
    from tests.reference import LEGACY

    folder = LEGACY / "fairchem2"
    frames = read_frames([folder / "frames.extxyz"])
    ckpt = folder / "esen_categorical_direct.pt"
    one = predict_atoms(ckpt, frames, batch_size=1)
    many = predict_atoms(ckpt, frames, batch_size=len(frames))
    assert len(frames) > 2 and [p.natoms for p in one] == [p.natoms for p in many]
    for key in ("energy", "energy_std", "energy_entropy", "energy_low90", "energy_high90"):
        np.testing.assert_allclose([getattr(p, key) for p in many],
                                   [getattr(p, key) for p in one], rtol=1e-5, err_msg=key)
    for a, b in zip(one, many, strict=True):
        np.testing.assert_allclose(b.forces, a.forces, rtol=0,
                                   atol=1e-4 * np.abs(a.forces).max())
        np.testing.assert_allclose(b.forces_std, a.forces_std, rtol=1e-4, atol=1e-6)
