"""End to end through fairchem's own entry point: train, predict, reload, fine-tune."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import CONFIGS, TEST_SEED, TINY_BACKBONE

pytestmark = pytest.mark.slow


EPOCHS = 2


def _run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fairchem_categorical.app.cli", *args],
                          capture_output=True, text=True, timeout=900)


def _cli(*args: str) -> list[str]:
    proc = _run_cli(*args)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout.strip().splitlines()


def _train_lines(config: str, data: dict[str, Path], bins: Path, run_dir: Path
                 ) -> tuple[Path, list[str]]:
    lines = _cli("train", str(CONFIGS / config), "--train-data", str(data["train"]),
                 "--val-data", str(data["val"]), "--bins", str(bins), "--max-epochs",
                 str(EPOCHS), "--run-dir", str(run_dir), "--seed", str(TEST_SEED),
                 *TINY_BACKBONE)
    ckpt = Path(lines[-1])  # the CLI's last line is the final checkpoint
    assert ckpt.name == "inference_ckpt.pt" and ckpt.is_file()
    return ckpt, lines


def _train(config: str, data: dict[str, Path], bins: Path, run_dir: Path) -> Path:
    return _train_lines(config, data, bins, run_dir)[0]


def _run_folder(ckpt: Path) -> Path:
    """<run_dir>/<timestamp_id> of a final inference checkpoint."""
    return ckpt.parents[2]


def _counts_by_hand(data: dict[str, Path], bins: Path, forces: bool) -> tuple[dict, dict]:
    import yaml

    from fairchem_categorical.data import read_frames
    from tests.reference import out_of_support_by_hand, times

    spec = yaml.safe_load(bins.read_text())
    return tuple(times(out_of_support_by_hand(read_frames([data[split]]), spec, forces),
                       EPOCHS) for split in ("train", "val"))


@pytest.fixture(scope="module")
def categorical_ckpt(small_dataset, small_bins, tmp_path_factory) -> Path:
    return _train("esen_categorical_conserving.yaml", small_dataset, small_bins,
                  tmp_path_factory.mktemp("cat_run"))


@pytest.fixture(scope="module")
def scalar_ckpt(small_dataset, small_bins, tmp_path_factory) -> Path:
    return _train("esen_scalar_conserving.yaml", small_dataset, small_bins,
                  tmp_path_factory.mktemp("scalar_run"))


def test_train_predict_csv_npz(categorical_ckpt, small_dataset, tmp_path):
    from fairchem_categorical.predictions import read_predictions

    out = tmp_path / "preds.csv"
    _cli("predict", "--checkpoint", str(categorical_ckpt), str(small_dataset["test"]),
         "--out", str(out))
    cols = read_predictions(out)
    n = len(cols["index"])
    assert n == 6  # one test system x 6 frames
    for key in ("energy", "energy_std", "energy_entropy", "energy_edge_mass", "energy_target",
                "forces_mae", "energy_low90", "energy_high90"):
        assert np.isfinite(cols[key]).all(), key
    assert (cols["energy_std"] > 0).all()
    assert ((cols["energy_entropy"] > 0) & (cols["energy_entropy"] <= np.log(64) + 1e-6)).all()
    assert (cols["energy_low90"] < cols["energy"]).all()
    assert (cols["energy"] < cols["energy_high90"]).all()
    arrays = np.load(out.with_suffix(".npz"))
    assert arrays["forces"].shape == (int(cols["natoms"].sum()), 3)
    assert np.isfinite(arrays["forces"]).all()
    # the stored histogram decodes to the CSV's energy
    decoded = (arrays["energy_probs"] * arrays["energy_bin_centers"]).sum(1)
    np.testing.assert_allclose(decoded, cols["energy"], rtol=1e-5, atol=1e-4)


def test_reload_from_a_copied_file_in_a_fresh_process(categorical_ckpt, small_dataset,
                                                      tmp_path):
    """A real round trip: the checkpoint file, copied elsewhere and loaded by a new process,
    predicts what the trained model measured on the validation split at the end of training
    (fairchem's logged energy MAE of the EMA weights it saves), and what this process
    predicts from the original file."""
    import re
    import shutil

    from fairchem_categorical.data import read_frames
    from fairchem_categorical.fairchem2.predict import predict_atoms
    from fairchem_categorical.predictions import load_predictions

    log = (_run_folder(categorical_ckpt) / "train.log").read_text()
    logged = [float(m) for m in re.findall(r"val/[^,\s]+,energy,mae: ([0-9.]+)", log)]
    assert len(logged) == EPOCHS
    copy = tmp_path / "elsewhere" / "model.pt"
    copy.parent.mkdir()
    shutil.copy(categorical_ckpt, copy)
    out = tmp_path / "val.csv"
    _cli("predict", "--checkpoint", str(copy), str(small_dataset["val"]), "--out", str(out))
    cols, arrays = load_predictions(out)
    mae = float(np.abs(cols["energy"] - cols["energy_target"]).mean())
    assert mae == pytest.approx(logged[-1], abs=2e-4)  # the log prints 4 decimals
    here = predict_atoms(categorical_ckpt, read_frames([small_dataset["val"]]))
    np.testing.assert_allclose(cols["energy"], [p.energy for p in here], rtol=1e-12)
    np.testing.assert_allclose(arrays["forces"], np.concatenate([p.forces for p in here]),
                               rtol=1e-6, atol=1e-7)


def test_categorical_run_counts_targets_outside_the_support(categorical_ckpt, small_dataset,
                                                            small_bins):
    """The shipped conserving config, as trained by ``train``: out_of_support.json in the
    run folder holds the clamped energy targets counted by hand, per epoch and in all."""
    import json

    from fairchem_categorical.clipping import SUMMARY_FILE

    train, val = _counts_by_hand(small_dataset, small_bins, forces=False)
    summary = json.loads((_run_folder(categorical_ckpt) / SUMMARY_FILE).read_text())
    assert summary["train"] == train and summary["val"] == val
    assert len(summary["epochs"]["train"]) == len(summary["epochs"]["val"]) == EPOCHS


def test_checkpoint_support_mismatch_is_a_clear_error(categorical_ckpt):
    from fairchem.core.units.mlip_unit.utils import load_inference_model

    from fairchem_categorical.histogram import SupportMismatchError

    ckpt = torch.load(categorical_ckpt, map_location="cpu", weights_only=False)
    support = dict(ckpt.model_config["heads"]["energy"]["support"])
    support["high"] = support["high"] + 1.0
    with pytest.raises(SupportMismatchError, match="high"):
        load_inference_model(str(categorical_ckpt),
                             overrides={"heads": {"energy": {"support": support}}})


def test_scalar_baseline_predicts_without_uncertainty(scalar_ckpt, small_dataset, tmp_path):
    from fairchem_categorical.predictions import read_predictions

    out = tmp_path / "scalar.csv"
    _cli("predict", "--checkpoint", str(scalar_ckpt), str(small_dataset["test"]),
         "--out", str(out))
    cols = read_predictions(out)
    assert np.isfinite(cols["energy"]).all() and np.isfinite(cols["forces_mae"]).all()
    assert np.isnan(cols["energy_std"]).all()  # a scalar head has no distribution


def test_finetune_scalar_checkpoint_with_categorical_heads(scalar_ckpt, small_dataset,
                                                           small_bins, tmp_path):
    """fairchem's fine-tuning path: backbone weights carried over, new heads learn."""
    from fairchem.core.units.mlip_unit.utils import load_inference_model

    from fairchem_categorical.data import read_frames
    from fairchem_categorical.fairchem2.predict import predict_atoms

    run_dir = tmp_path / "ft"
    lines = _cli("train", str(CONFIGS / "esen_categorical_finetune.yaml"),
                 "--train-data", str(small_dataset["train"]),
                 "--val-data", str(small_dataset["val"]), "--bins", str(small_bins),
                 "--max-epochs", "10", "--run-dir", str(run_dir), "batch_size=4", "lr=3e-3",
                 f"starting_checkpoint={scalar_ckpt}")
    final = Path(lines[-1])
    step0 = final.parent.parent / "step_0" / "inference_ckpt.pt"
    assert step0.is_file()

    scalar_model, _ = load_inference_model(str(scalar_ckpt))
    start_model, _ = load_inference_model(str(step0))
    scalar_bb = scalar_model.backbone.state_dict()
    start_bb = start_model.backbone.state_dict()
    assert scalar_bb.keys() == start_bb.keys()
    for key, value in scalar_bb.items():
        assert torch.equal(value, start_bb[key]), key
    assert type(start_model.output_heads["energy"]).__name__ == "CategoricalEnergyHead"

    frames = read_frames([small_dataset["train"]])

    def target_nll(ckpt: Path) -> float:
        """Mean -log p(bin holding the target): what the cross-entropy trains."""
        nll = []
        for p in predict_atoms(ckpt, frames):
            c = p.energy_bin_centers
            k = int(np.clip(np.round((p.energy_target - c[0]) / (c[1] - c[0])), 0, len(c) - 1))
            nll.append(-np.log(max(p.energy_probs[k], 1e-30)))
        return float(np.mean(nll))

    assert target_nll(final) < target_nll(step0)


def test_direct_force_config_trains_and_reports_force_uncertainty(small_dataset, small_bins,
                                                                 tmp_path):
    """The direct-force config with bins too narrow for the data: the energy and
    force-magnitude targets it clamps are counted as by hand (summary file, one log line
    per epoch and validation, the line train prints), and it still predicts."""
    import json

    from fairchem_categorical.clipping import SUMMARY_FILE, summary_line
    from fairchem_categorical.predictions import read_predictions
    from tests.reference import narrowed_bins

    bins = narrowed_bins(small_bins, tmp_path / "narrow.yaml")
    ckpt, lines = _train_lines("esen_categorical_direct.yaml", small_dataset, bins,
                               tmp_path / "run")
    train, val = _counts_by_hand(small_dataset, bins, forces=True)
    assert train["energy"]["outside"] > 0 and train["force magnitude"]["outside"] > 0
    summary = json.loads((_run_folder(ckpt) / SUMMARY_FILE).read_text())
    assert summary["train"] == train and summary["val"] == val
    assert lines[-2].startswith(summary_line(summary))
    log = (_run_folder(ckpt) / "train.log").read_text()
    assert log.count("out of support (clamped to the edge bin), epoch") == 2 * EPOCHS

    out = tmp_path / "direct.csv"
    _cli("predict", "--checkpoint", str(ckpt), str(small_dataset["test"]), "--out", str(out))
    cols = read_predictions(out)
    assert np.isfinite(cols["forces_mae"]).all()
    assert (cols["forces_uncertainty_mean"] > 0).all()
    arrays = np.load(out.with_suffix(".npz"))
    assert arrays["forces_entropy"].shape == (int(cols["natoms"].sum()),)
    assert (arrays["forces_std"] >= 0).all()


def test_calibrate_a_scalar_checkpoint_says_it_needs_a_categorical_one(scalar_ckpt,
                                                                      small_dataset,
                                                                      tmp_path):
    proc = _run_cli("calibrate", "--checkpoint", str(scalar_ckpt), "--val",
                    str(small_dataset["val"]), "--out", str(tmp_path / "cal.pt"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert (f"error: calibrate needs a categorical checkpoint (one with a "
            f"CategoricalEnergyHead); {scalar_ckpt} has no categorical energy head (its "
            "heads: MLP_EFS_Head)") in proc.stderr
    assert not (tmp_path / "cal.pt").exists()


def test_calibrate_stores_a_temperature_that_predict_applies(categorical_ckpt, small_dataset,
                                                            tmp_path):
    import json

    from fairchem_categorical.data import read_frames
    from fairchem_categorical.fairchem2.predict import predict_atoms

    out = tmp_path / "calibrated.pt"
    lines = _cli("calibrate", "--checkpoint", str(categorical_ckpt), "--val",
                 str(small_dataset["val"]), "--out", str(out))
    assert Path(lines[-1]) == out and out.is_file()
    temperature = float(lines[0].split()[1])
    assert temperature > 0 and abs(temperature - 1.0) > 1e-3
    before_nll, after_nll = (float(x) for x in lines[1].split(":")[1].split("->"))
    assert after_nll <= before_nll + 1e-6  # the fit minimises exactly this on val

    frames = read_frames([small_dataset["test"]])[:2]
    raw, cal = predict_atoms(categorical_ckpt, frames), predict_atoms(out, frames)
    for p, q in zip(raw, cal, strict=True):
        expected = np.exp(np.log(p.energy_probs) / temperature)
        np.testing.assert_allclose(q.energy_probs, expected / expected.sum(), atol=1e-5)

    report = tmp_path / "eval"
    _cli("evaluate", "--checkpoint", str(out), "--data", str(small_dataset["test"]),
         "--ood-data", str(small_dataset["val"]), "--out", str(report))
    metrics = json.loads((report / "metrics.json").read_text())
    for key in ("energy_mae", "forces_mae", "spearman_energy_std", "energy_nll",
                "miscalibration_area", "auroc_energy_std"):
        assert key in metrics
    assert np.isfinite(metrics["energy_nll"]) and 0 <= metrics["miscalibration_area"] <= 1
    for png in ("error_vs_uncertainty.png", "calibration_curve.png", "extreme_histograms.png",
                "rejection_curve.png"):
        assert (report / png).stat().st_size > 1000


def test_demo_pipeline_writes_table_and_plot(tmp_path):
    """`make demo` at the smallest size: both models trained, scored, plotted."""
    import json

    from fairchem_categorical.app.demo import run_demo

    results = run_demo(tmp_path, max_epochs=1, n_systems=4)
    assert set(results) == {"categorical", "scalar"}
    for name in results:
        assert np.isfinite(results[name]["energy_mae"]) and results[name]["train_seconds"] > 0
    assert np.isfinite(results["categorical"]["spearman_energy_std"])
    assert np.isnan(results["scalar"]["spearman_energy_std"])
    # the fitted uncertainty: its ranking, its intervals and the OOD split's AUROC
    cat = results["categorical"]
    for key in ("spearman_energy_uncertainty_per_atom", "energy_coverage90_uncertainty",
                "miscalibration_area_uncertainty", "auroc_ood_score"):
        assert np.isfinite(cat[key]) and np.isnan(results["scalar"][key]), key
    assert 0.0 <= cat["energy_coverage90_uncertainty"] <= 1.0
    assert json.loads((tmp_path / "summary.json").read_text()) == json.loads(
        json.dumps(results))
    table = (tmp_path / "summary.md").read_text()
    assert "| energy MAE (eV) |" in table and "AUROC of ood_score" in table
    for png in ("energy_distributions", "error_vs_energy_uncertainty", "calibration",
                "ood_scores"):
        assert (tmp_path / f"{png}.png").stat().st_size > 10_000, png


def test_uma_moe_config_trains_and_predicts(small_dataset, small_bins, tmp_path):
    from fairchem_categorical.data import read_frames
    from fairchem_categorical.fairchem2.predict import predict_atoms

    ckpt = _train("uma_categorical_conserving.yaml", small_dataset, small_bins, tmp_path / "run")
    preds = predict_atoms(ckpt, read_frames([small_dataset["test"]]))
    assert all(np.isfinite(p.energy) and p.energy_std > 0 for p in preds)
    assert all(np.isfinite(p.forces).all() for p in preds)


def test_calculator_on_a_scalar_checkpoint_gives_energy_and_forces_only(scalar_ckpt,
                                                                       small_dataset):
    from fairchem_categorical.data import read_frames
    from fairchem_categorical.fairchem2.calculator import CategoricalCalculator
    from fairchem_categorical.fairchem2.predict import predict_atoms

    frame = read_frames([small_dataset["test"]])[0]
    calc = CategoricalCalculator.from_model_checkpoint(scalar_ckpt, device="cpu", seed=2)
    atoms = frame.copy()
    atoms.calc = calc
    (want,) = predict_atoms(scalar_ckpt, [frame], seed=2)
    assert atoms.get_potential_energy() == want.energy
    np.testing.assert_array_equal(calc.results["forces"], want.forces)
    assert set(calc.results) <= {"energy", "free_energy", "forces", "stress"}
    assert "energy_uncertainty" not in calc.implemented_properties
    assert "energy_uncertainty" not in atoms.info


def test_fit_uncertainty_calibrate_predict_evaluate(categorical_ckpt, small_dataset, tmp_path):
    """fit-uncertainty on train + calibrate on val; the state travels in the checkpoint."""
    import json

    from fairchem_categorical.fairchem2.uncertainty import read_state
    from fairchem_categorical.predictions import read_predictions

    fitted = tmp_path / "fitted.pt"
    lines = _cli("fit-uncertainty", "--checkpoint", str(categorical_ckpt), "--train",
                 str(small_dataset["train"]), "--val", str(small_dataset["val"]),
                 "--out", str(fitted), "--method", "mahalanobis")
    assert Path(lines[-1]) == fitted
    assert any(line.startswith("epistemic scale (mahalanobis)") for line in lines)
    state = read_state(fitted)
    assert state["method"] == "mahalanobis"
    out = tmp_path / "preds.csv"
    _cli("predict", "--checkpoint", str(fitted), str(small_dataset["test"]), "--out", str(out))
    cols = read_predictions(out)
    assert np.isfinite(cols["energy_uncertainty"]).all() and np.isfinite(cols["ood_score"]).all()
    assert (cols["energy_uncertainty"] > cols["energy_std"]).all()
    arrays = np.load(out.with_suffix(".npz"))
    assert arrays["atom_ood_score"].shape == (int(cols["natoms"].sum()),)

    # calibrating again keeps the fitted state and refits the scale from where it is
    again = tmp_path / "again.pt"
    lines = _cli("calibrate", "--checkpoint", str(fitted), "--val", str(small_dataset["val"]),
                 "--out", str(again))
    factor = float(lines[0].split("(x")[1].split()[0])
    assert factor == 1.0  # the temperature is held
    assert read_state(again)["alpha"]["mahalanobis"] == pytest.approx(
        state["alpha"]["mahalanobis"], rel=0.05)

    report = tmp_path / "eval"
    _cli("evaluate", "--checkpoint", str(fitted), "--data", str(small_dataset["test"]),
         "--ood-data", str(small_dataset["val"]), "--out", str(report))
    metrics = json.loads((report / "metrics.json").read_text())
    for key in ("auroc_ood_score", "spearman_energy_uncertainty", "energy_nll_uncertainty",
                "miscalibration_area_uncertainty"):
        assert np.isfinite(metrics[key]), key
    assert "spearman_natoms" in metrics  # NaN here: one test system, one atom count


def test_train_with_fit_uncertainty_ends_on_a_fitted_checkpoint(small_dataset, small_bins,
                                                                tmp_path):
    from fairchem_categorical.fairchem2.uncertainty import read_state

    lines = _cli("train", str(CONFIGS / "esen_categorical_conserving.yaml"), "--train-data",
                 str(small_dataset["train"]), "--val-data", str(small_dataset["val"]),
                 "--bins", str(small_bins), "--max-epochs", "1", "--run-dir", str(tmp_path),
                 "--fit-uncertainty", *TINY_BACKBONE)
    fitted = Path(lines[-1])
    assert fitted.name == "inference_ckpt_fitted.pt" and fitted.is_file()
    assert read_state(fitted)["alpha"]["mahalanobis_tied"] != 1.0  # calibrated on val
    assert read_state(fitted.with_name("inference_ckpt.pt")) is None  # the original untouched
    # fine-tuning the fitted checkpoint: its statistics describe the old features, so the
    # new checkpoint (raw and EMA weights, which predict loads) comes out unfitted
    tuned = Path(_cli("train", str(CONFIGS / "esen_categorical_finetune.yaml"), "--train-data",
                      str(small_dataset["train"]), "--val-data", str(small_dataset["val"]),
                      "--bins", str(small_bins), "--max-epochs", "1", "--run-dir",
                      str(tmp_path / "ft"), f"starting_checkpoint={fitted}",
                      "model.heads=null")[-1])
    assert read_state(tuned) is None


def test_finetune_keeping_the_heads_refuses_other_bins(categorical_ckpt, small_dataset,
                                                       small_bins, tmp_path):
    """``model.heads=null`` keeps the checkpoint's heads; bins fitted otherwise would train
    targets in another space: refused at the start of training, both supports named."""
    from tests.reference import narrowed_bins

    bins = narrowed_bins(small_bins, tmp_path / "narrow.yaml")
    proc = _run_cli("train", str(CONFIGS / "esen_categorical_finetune.yaml"), "--train-data",
                    str(small_dataset["train"]), "--val-data", str(small_dataset["val"]),
                    "--bins", str(bins), "--max-epochs", "1", "--run-dir", str(tmp_path / "ft"),
                    f"starting_checkpoint={categorical_ckpt}", "model.heads=null")
    assert proc.returncode == 2
    assert "HeadsMismatchError: the model's energy head decodes differently from how this " \
           "run's bins encode its targets (support: head [" in proc.stderr
    assert not list((tmp_path / "ft").glob("*/checkpoints/final/inference_ckpt.pt"))


def test_shallow_ensemble_trains_fits_and_predicts_its_members(small_dataset, small_bins,
                                                               tmp_path):
    """``+heads.energy.num_members=3`` through the CLI: training (fairchem's loss and metrics
    on the members' logits), fit-uncertainty with calibration, then predict's mixture."""
    from fairchem_categorical.predictions import load_predictions

    lines = _cli("train", str(CONFIGS / "esen_categorical_conserving.yaml"), "--train-data",
                 str(small_dataset["train"]), "--val-data", str(small_dataset["val"]),
                 "--bins", str(small_bins), "--max-epochs", str(EPOCHS), "--run-dir",
                 str(tmp_path / "run"), "--seed", str(TEST_SEED), *TINY_BACKBONE,
                 "+heads.energy.num_members=3")
    ckpt = Path(lines[-1])
    fitted = tmp_path / "fitted.pt"
    _cli("fit-uncertainty", "--checkpoint", str(ckpt), "--train", str(small_dataset["train"]),
         "--val", str(small_dataset["val"]), "--out", str(fitted))
    out = tmp_path / "preds.csv"
    _cli("predict", "--checkpoint", str(fitted), str(small_dataset["test"]), "--out", str(out))
    cols, arrays = load_predictions(out)
    members = arrays["energy_member_probs"]
    assert members.shape == (len(cols["index"]), 3, arrays["energy_probs"].shape[-1])
    np.testing.assert_allclose(members.mean(1), arrays["energy_probs"], rtol=1e-5, atol=1e-8)
    assert (cols["energy_disagreement"] > 0).all()  # trained members still differ
    assert (cols["energy_uncertainty"] >= cols["energy_kernel_std"]).all()
    assert np.isfinite(arrays["forces"]).all()
