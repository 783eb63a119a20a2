"""``--device`` on every command that runs a model, passed to every pass it makes.

fairchem 2.x's predict unit asserts ``device in {cpu, cuda}``: ``cuda:N`` must reach it as
``cuda`` with N the current CUDA device, never as an AssertionError traceback.
"""

from __future__ import annotations

import importlib

import pytest
import torch

from fairchem_categorical import devices
from fairchem_categorical.app import cli, jobs, lines
from tests.reference import LEGACY, fairchem_line

LINE = fairchem_line()
LEGACY_CKPT = {2: LEGACY / "fairchem2" / "esen_categorical_conserving.pt",
               1: LEGACY / "fairchem1" / "esen_categorical_conserving.pt"}


@pytest.fixture
def two_gpus(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """A machine with two CUDA devices, as far as the device checks can tell; the list
    records what ``torch.cuda.set_device`` was asked for."""
    current: list[int] = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", current.append)
    return current


def test_cuda_n_reaches_fairchem_as_cuda_on_the_current_device(two_gpus) -> None:
    assert devices.fairchem_device("cuda:1") == "cuda"
    assert two_gpus == [1]
    assert devices.fairchem_device("cuda") == "cuda" and two_gpus == [1]  # left as it is
    assert devices.fairchem_device("cpu") == "cpu"
    assert devices.fairchem_device(None) == "cuda"  # fairchem's default with a GPU
    assert devices.cuda_visible("cuda:1") == {"CUDA_VISIBLE_DEVICES": "1"}
    assert devices.cuda_visible("cuda") == {} and devices.cuda_visible("cpu") == {}


def test_without_a_gpu_the_default_is_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert devices.fairchem_device(None) == "cpu"


@pytest.mark.parametrize(("name", "message"), [
    ("gpu", "--device gpu: use cpu, cuda or cuda:N"),
    ("cpu:0", "--device cpu:0: use cpu, cuda or cuda:N"),
    ("cuda:x", "--device cuda:x: N in cuda:N must be a device number, e.g. cuda:0"),
    ("cuda:2", "--device cuda:2: this machine has 2 CUDA device(s)"),
])
def test_bad_devices_are_named(name: str, message: str, two_gpus) -> None:
    with pytest.raises(ValueError) as err:
        devices.check_device(name)
    assert str(err.value) == message


@pytest.mark.parametrize("command", ["predict", "evaluate", "calibrate", "fit-uncertainty",
                                     "screen", "train", "active-learn", "demo"])
def test_every_command_that_runs_a_model_takes_device(command: str) -> None:
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices[command]
    assert "--device" in sub._option_string_actions, command


@pytest.mark.skipif(LINE is None, reason="needs fairchem-core (either line)")
@pytest.mark.parametrize("command", ["evaluate", "calibrate"])
def test_evaluate_and_calibrate_refuse_a_missing_gpu_before_work(command, capsys, tmp_path,
                                                                 monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    data = LEGACY / f"fairchem{LINE}" / "frames.extxyz"
    args = {"evaluate": ["--checkpoint", LEGACY_CKPT[LINE], "--data", data],
            "calibrate": ["--checkpoint", LEGACY_CKPT[LINE], "--val", data]}[command]
    code = cli.main([command, *map(str, args), "--out", str(tmp_path / "o.pt"),
                     "--device", "cuda"])
    assert code == 2
    assert capsys.readouterr().err.strip() == (
        "error: --device cuda: CUDA is not available here (no GPU or no CUDA build of torch); "
        "use --device cpu")
    assert not (tmp_path / "o.pt").exists()


class _Stop(Exception):
    pass


def test_fit_uncertainty_calibrates_on_its_device(two_gpus, monkeypatch, tmp_path) -> None:
    """Both calibration passes (before and after) run where the fit ran."""
    seen: list[tuple[str, str]] = []

    class Adapter:
        @staticmethod
        def require_categorical(checkpoint, command):  # noqa: ANN001, ANN205
            return None

        @staticmethod
        def fit(checkpoint, frames, method, batch_size, device, progress):  # noqa: ANN001, ANN205
            seen.append(("fit", device))
            return {"method": method, "num_structures": sum(1 for _ in frames), "elements": [],
                    "element_counts": []}

        @staticmethod
        def write(checkpoint, out, **kwargs):  # noqa: ANN001, ANN003, ANN205
            return None

    class Line:
        @staticmethod
        def adapter(name: str) -> type:
            return Adapter

    def predict_files(checkpoint, paths, **kwargs):  # noqa: ANN001, ANN003, ANN202
        seen.append(("predict", kwargs.get("device", "cpu")))
        raise _Stop

    monkeypatch.setattr(lines, "for_checkpoint", lambda *a: Line)
    monkeypatch.setattr(importlib.import_module("fairchem_categorical.app.jobs.calibrate"),
                        "predict_files", predict_files)
    data = LEGACY / "fairchem2" / "frames.extxyz"
    with pytest.raises(_Stop):
        jobs.fit_uncertainty("model.pt", [data], [data], tmp_path / "fitted.pt",
                             device="cuda:1")
    assert seen == [("fit", "cuda:1"), ("predict", "cuda:1")]
