"""Running fairchem's CLI as a child: the log keeps everything, progress lines reach the user."""

from __future__ import annotations

import sys

import pytest

from fairchem_categorical.runs import check_trained, progress_text, run_logged


def test_run_logged_keeps_the_whole_output_and_forwards_progress(tmp_path) -> None:
    script = ("print('2026-01-01 (INFO): Started train epoch 0'); print('noise'); "
              "print('x (INFO): train/loss: 1.5'); raise SystemExit(3)")
    said = []
    code = run_logged([sys.executable, "-c", script], tmp_path / "run" / "train.log", said.append)
    assert code == 3
    assert (tmp_path / "run" / "train.log").read_text().splitlines() == [
        "2026-01-01 (INFO): Started train epoch 0", "noise", "x (INFO): train/loss: 1.5"]
    assert said == ["  Started train epoch 0", "  train/loss: 1.5"]


def test_check_trained_names_the_log_tail(tmp_path) -> None:
    log = tmp_path / "train.log"
    log.write_text("\n".join(f"line {i}" for i in range(40)))
    ckpt = tmp_path / "final.pt"
    with pytest.raises(RuntimeError, match=r"(?s)exit 1.*line 39") as err:
        check_trained(1, ckpt, log)
    assert "line 14\n" not in str(err.value)  # only the last 25 lines
    with pytest.raises(RuntimeError, match="exit 0"):
        check_trained(0, ckpt, log)  # success without a checkpoint is a failure too
    ckpt.write_bytes(b"x")
    assert check_trained(0, ckpt, log) == ckpt


def test_progress_text_drops_fairchem_prefix() -> None:
    assert progress_text("2026 [/a/b.py:12] (INFO): energy_mae: 0.1\n") == "energy_mae: 0.1"


def test_progress_text_drops_warning_and_logger_prefixes() -> None:
    assert progress_text("2026 (WARNING): item 3 holds Zn\n") == "item 3 holds Zn"
    assert progress_text("WARNING:root:item 3 holds Zn") == "item 3 holds Zn"
    assert progress_text("INFO:root:out of support, epoch 1") == "out of support, epoch 1"
