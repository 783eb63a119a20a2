"""What bad input gets: one clear line (exit 2), never a traceback, nothing silently dropped.

Each test backs a row of the README's "What bad input gets" table. The command line runs
in-process (``cli.main``); checks that need a model use the legacy checkpoint of the
installed fairchem line (``tests/data/legacy``).
"""

from __future__ import annotations

import math
import re
import sys
from pathlib import Path

import ase.io
import numpy as np
import pytest
import yaml
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from fairchem_categorical.app import cli, lines
from fairchem_categorical.predictions import read_predictions
from tests.reference import LEGACY, fairchem_line

LINE = fairchem_line()
needs_a_line = pytest.mark.skipif(LINE is None, reason="needs fairchem-core (either line)")
LEGACY_CKPT = {2: LEGACY / "fairchem2" / "esen_categorical_conserving.pt",
               1: LEGACY / "fairchem1" / "esen_categorical_conserving.pt"}


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def refused(capsys, *args: str) -> str:
    """The one-line error a refused command prints (exit code 2)."""
    code, _, err = run_cli(capsys, *args)
    assert code == 2, err
    lines_ = [ln for ln in err.strip().splitlines() if ln.startswith("error: ")]
    assert len(lines_) == 1 and "Traceback" not in err, err
    return lines_[0]


def _frames(n: int = 3) -> list[Atoms]:
    out = []
    for i in range(n):
        atoms = Atoms("CuO", positions=[[0, 0, 0], [0, 0, 1.8 + 0.1 * i]], cell=[6, 6, 6],
                      pbc=True)
        atoms.calc = SinglePointCalculator(atoms, energy=-1.0 - i,
                                           forces=np.full((2, 3), 0.1 * i))
        out.append(atoms)
    return out


# -- outputs --------------------------------------------------------------------------


def test_predict_out_that_is_a_directory(capsys, tmp_path) -> None:
    (tmp_path / "preds").mkdir()
    msg = refused(capsys, "predict", "--checkpoint", "whatever.pt", tmp_path, "--out",
                  tmp_path / "preds")
    assert msg == (f"error: --out {tmp_path / 'preds'}: is a directory; give a file path, "
                   f"e.g. {tmp_path / 'preds' / 'predictions.csv'}")


@pytest.mark.parametrize("where", ["/sys/preds.csv", "file"])
def test_predict_out_that_cannot_be_written(capsys, tmp_path, where: str) -> None:
    if where == "file":  # a path under a regular file
        (tmp_path / "f").write_text("x")
        target = tmp_path / "f" / "preds.csv"
        expect = "a parent of it is a file, not a folder"
    else:  # root can write anywhere but /sys
        target = Path(where)
        expect = "cannot write there (permission denied)"
    msg = refused(capsys, "predict", "--checkpoint", "x.pt", tmp_path, "--out", target)
    assert msg == f"error: --out {target}: {expect}"


def test_evaluate_and_fit_bins_outputs(capsys, tmp_path) -> None:
    (tmp_path / "file").write_text("x")
    msg = refused(capsys, "evaluate", "--predictions", tmp_path / "p.csv", "--out",
                  tmp_path / "file")
    assert msg == f"error: --out {tmp_path / 'file'}: is a file; give a folder"
    msg = refused(capsys, "fit-bins", tmp_path / "data.xyz", "--out", tmp_path)
    assert msg.startswith(f"error: --out {tmp_path}: is a directory")


# -- checkpoints and devices ------------------------------------------------------------


def test_a_file_that_is_not_a_checkpoint(capsys, tmp_path) -> None:
    text = tmp_path / "notes.pt"
    text.write_text("not a checkpoint")
    msg = refused(capsys, "predict", "--checkpoint", text, tmp_path, "--out", tmp_path / "p.csv")
    assert msg == f"error: {text} is not a checkpoint (not a file torch.save wrote)"
    import torch

    torch.save({"weights": torch.zeros(2)}, tmp_path / "tensor.pt")
    msg = refused(capsys, "predict", "--checkpoint", tmp_path / "tensor.pt", tmp_path,
                  "--out", tmp_path / "p.csv")
    assert "is a torch file but not a fairchem checkpoint" in msg
    cut = tmp_path / "cut.pt"
    data = LEGACY_CKPT[2].read_bytes()
    cut.write_bytes(data[:len(data) // 2])  # an interrupted copy
    msg = refused(capsys, "predict", "--checkpoint", cut, tmp_path, "--out", tmp_path / "p.csv")
    assert msg == (f"error: {cut} is a damaged or truncated checkpoint (the zip archive "
                   "torch.save writes is incomplete; copy it again)")
    assert not (tmp_path / "p.csv").exists()


def test_checkpoint_lines_are_told_apart_without_unpickling() -> None:
    for major, ckpt in LEGACY_CKPT.items():
        assert lines.checkpoint_line(ckpt) == major


@needs_a_line
def test_the_other_lines_checkpoint_in_predict(capsys, tmp_path) -> None:
    other = 1 if LINE == 2 else 2
    msg = refused(capsys, "predict", "--checkpoint", LEGACY_CKPT[other],
                  LEGACY / f"fairchem{other}" / "frames.extxyz", "--out", tmp_path / "p.csv")
    want = lines.LINES[other]
    assert (f"(a {want.label} checkpoint) needs {want.label}, but this environment has "
            f"fairchem-core {LINE}.x; run it with {want.venv}/bin/fairchem-categorical") in msg


@needs_a_line
def test_cuda_device_without_cuda(capsys, tmp_path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    msg = refused(capsys, "predict", "--checkpoint", LEGACY_CKPT[LINE],
                  LEGACY / f"fairchem{LINE}" / "frames.extxyz", "--out", tmp_path / "p.csv",
                  "--device", "cuda")
    assert msg == ("error: --device cuda: CUDA is not available here (no GPU or no CUDA build "
                   "of torch); use --device cpu")


def test_calibrate_out_equal_to_the_checkpoint(capsys, tmp_path) -> None:
    ckpt = tmp_path / "model.pt"
    ckpt.write_bytes(LEGACY_CKPT[LINE].read_bytes())
    before = ckpt.read_bytes()
    msg = refused(capsys, "calibrate", "--checkpoint", ckpt, "--val", tmp_path, "--out",
                  tmp_path / "." / "model.pt")
    assert msg == (f"error: --out {tmp_path / 'model.pt'} is the checkpoint to calibrate "
                   "itself; writing there would overwrite the original: give another path")
    assert ckpt.read_bytes() == before


# -- bins files -------------------------------------------------------------------------


@pytest.mark.parametrize("content, expect", [
    ("- 1\n- 2\n", "is not a fit-bins file: expected a mapping with 'energy' and 'support', "
                   "found a list"),
    ("energy: {mean: 0}\n", "is not a fit-bins file: missing ['support']"),
    ("energy: [1, 2]\nsupport: {low: 0, high: 1}\n", "'energy' must be a mapping, found list"),
    ("energy: {}\nsupport: {low: 1, high: 0}\n", "bad 'support' block (support needs low < high"),
    ("energy: {level: total}\nsupport: {low: 0, high: 1}\n",
     "does not support energy level 'total'"),
    ("energy: [unclosed\n", "not valid YAML"),
])
def test_a_bins_file_that_is_not_one(capsys, tmp_path, content: str, expect: str) -> None:
    from fairchem_categorical.bins import read_bins

    bins = tmp_path / "bins.yaml"
    bins.write_text(content)
    with pytest.raises(ValueError) as err:
        read_bins(bins)
    assert str(err.value).startswith(str(bins)) and expect in str(err.value)
    config = Path(__file__).resolve().parents[2] / "configs" / "fairchem2" / \
        "esen_categorical_conserving.yaml"
    if LINE == 2:  # train reads it before fairchem starts or a run folder is made
        msg = refused(capsys, "train", config, "--bins", bins, "--run-dir", tmp_path / "runs")
        assert expect in msg
        assert not (tmp_path / "runs").exists()


def test_fit_bins_total_level(capsys, tmp_path) -> None:
    path = tmp_path / "d.xyz"
    ase.io.write(path, _frames(), format="extxyz")
    msg = refused(capsys, "fit-bins", path, "--level", "total", "--out", tmp_path / "b.yaml")
    assert "fit-bins does not support energy level 'total'" in msg
    assert "not size-extensive" in msg and not (tmp_path / "b.yaml").exists()


# -- evaluate -----------------------------------------------------------------------------


def _write_csv(path: Path, columns: dict[str, list]) -> Path:
    keys = list(columns)
    rows = [",".join(str(columns[k][i]) for k in keys) for i in range(len(columns[keys[0]]))]
    path.write_text(",".join(keys) + "\n" + "\n".join(rows) + "\n")
    return path


def test_evaluate_an_external_csv_without_energy_std(capsys, tmp_path) -> None:
    csv_path = _write_csv(tmp_path / "ens.csv", {
        "energy": [1.0, 2.0, 4.0], "energy_target": [1.5, 2.0, 3.0], "natoms": [2, 2, 4]})
    code, out, err = run_cli(capsys, "evaluate", "--predictions", csv_path, "--out",
                             tmp_path / "rep")
    assert code == 0, err
    assert re.search(r"^energy_mae +0\.5000$", out, flags=re.M), out
    import json

    metrics = json.loads((tmp_path / "rep" / "metrics.json").read_text())
    assert metrics["energy_mae"] == pytest.approx(0.5)
    assert math.isnan(metrics["spearman_energy_std"])


def test_evaluate_says_when_the_nll_is_a_gaussians(capsys, tmp_path) -> None:
    csv_path = _write_csv(tmp_path / "p.csv", {
        "energy": [1.0, 2.0, 4.0, 0.0], "energy_target": [1.5, 2.0, 3.0, 0.1],
        "energy_std": [0.4, 0.1, 1.0, 0.2], "natoms": [2, 2, 4, 3]})
    code, out, _ = run_cli(capsys, "evaluate", "--predictions", csv_path, "--out",
                           tmp_path / "rep")
    assert code == 0
    assert (f"note: {tmp_path / 'p.npz'} was not found, so energy_nll and miscalibration_area "
            "use a Gaussian(energy, energy_std), not the predicted histograms") in out
    assert re.search(r"^energy_nll_is_histogram +0\.0000$", out, flags=re.M), out


def test_evaluate_counts_structures_left_out_of_the_rankings(capsys, tmp_path) -> None:
    csv_path = _write_csv(tmp_path / "p.csv", {
        "energy": [1.0, "nan", 4.0, 0.0, 2.0], "energy_target": [1.5, 2.0, 3.0, 0.1, 2.2],
        "energy_std": [0.4, 0.1, "inf", 0.2, 0.3], "natoms": [2, 2, 4, 3, 3]})
    ood = _write_csv(tmp_path / "ood.csv", {
        "energy": [1.0, 2.0], "energy_target": [1.0, 2.0], "energy_std": ["nan", 0.9],
        "natoms": [2, 2]})
    code, out, _ = run_cli(capsys, "evaluate", "--predictions", csv_path, "--ood-predictions",
                           ood, "--out", tmp_path / "rep")
    assert code == 0
    assert re.search(r"^n_nonfinite_energy +1$", out, flags=re.M), out
    assert ("note: 1 structure(s) with a non-finite predicted energy were left out of the "
            "Spearman, rejection and AUROC scores") in out
    assert "note: 1 structure(s) with a non-finite uncertainty were left out" in out
    assert "note: 1 structure(s) with a non-finite uncertainty (OOD set) were left out" in out


@pytest.mark.parametrize("args, expect", [
    (["--predictions", "p.csv", "--data", "d"], "--data needs --checkpoint"),
    (["--predictions", "p.csv", "--ood-data", "d", "e"], "--ood-data needs --checkpoint"),
    (["--predictions", "p.csv", "--checkpoint", "c.pt", "--data", "d"], "not both"),
    (["--checkpoint", "c.pt", "--data", "d", "--npz", "x.npz"],
     "--npz go with --predictions, not --checkpoint"),
])
def test_evaluate_arguments_that_would_be_ignored(capsys, tmp_path, args, expect) -> None:
    msg = refused(capsys, "evaluate", *args, "--out", tmp_path / "rep")
    assert expect in msg


# -- data -----------------------------------------------------------------------------


def test_predict_reads_data_labelled_with_energies_only(tmp_path) -> None:
    from fairchem_categorical.data import read_frames

    frames = _frames()
    for atoms in frames[1:]:
        atoms.calc = SinglePointCalculator(atoms, energy=atoms.calc.results["energy"])
    path = tmp_path / "energies.xyz"
    ase.io.write(path, frames, format="extxyz")
    with pytest.raises(ValueError, match=r"energies\.xyz\[1\]: no forces"):
        read_frames([path])  # training data needs forces
    got = read_frames([path], require_labels=False)  # prediction does not
    assert [sorted(a.calc.results) for a in got] == [["energy", "forces"], ["energy"],
                                                     ["energy"]]
    assert [a.calc.results["energy"] for a in got] == [-1.0, -2.0, -3.0]


@needs_a_line
def test_predict_on_energies_only_and_unseen_elements(capsys, tmp_path) -> None:
    """Energies-only data predicts (forces_mae empty); a structure holding an element the
    model's bins never saw is named on the console and marked in the CSV. The legacy
    checkpoints predate the recorded elements: their non-zero references stand in."""
    from ase.data import chemical_symbols

    folder = LEGACY / f"fairchem{LINE}"
    refs = yaml.safe_load((folder / "bins.yaml").read_text())["energy"]["element_references"]
    seen = {z for z, ref in enumerate(refs) if ref != 0.0}
    frames = ase.io.read(folder / "frames.extxyz", index=":3")
    for atoms in frames:
        atoms.calc = SinglePointCalculator(atoms, energy=atoms.calc.results["energy"])
    frames[1].numbers[-1] = 30  # Zn: in no training data here
    expected = [" ".join(chemical_symbols[z] for z in sorted(set(a.numbers) - seen))
                for a in frames]
    assert "Zn" in expected[1]
    data = tmp_path / "e.xyz"
    ase.io.write(data, frames, format="extxyz")
    code, out, err = run_cli(capsys, "predict", "--checkpoint", LEGACY_CKPT[LINE], data,
                             "--out", tmp_path / "p.csv")
    assert code == 0, err
    flagged = sum(bool(e) for e in expected)
    assert (f"warning: {flagged} of 3 structures hold elements the model never saw in "
            "training (") in out
    assert "Zn in 1 (1)" in out and "the CSV marks them in 'unseen_elements'" in out
    cols = read_predictions(tmp_path / "p.csv")
    assert list(cols["unseen_elements"]) == expected
    np.testing.assert_allclose(cols["energy_target"],
                               [a.calc.results["energy"] for a in frames])
    assert np.isnan(cols["forces_mae"]).all() and np.isfinite(cols["energy"]).all()


@pytest.mark.skipif(LINE != 2, reason="the pyg-lmdb format is missing only in the 2.x env")
def test_pyg_lmdb_input_in_the_fairchem2_environment(capsys, monkeypatch, tmp_path) -> None:
    # torch_geometric is absent from a bare 2.x environment (the 'realistic' extra's sevenn
    # brings it): the message is for the environment without it
    monkeypatch.setitem(sys.modules, "torch_geometric", None)
    monkeypatch.setitem(sys.modules, "torch_geometric.data", None)
    data = tmp_path / "pyg"
    data.mkdir()
    (data / "data.lmdb").write_bytes(b"\0" * 8192)
    msg = refused(capsys, "fit-bins", data, "--out", tmp_path / "b.yaml")
    assert msg.startswith(f"error: {data / 'data.lmdb'}: pyg-lmdb (.lmdb) datasets need the "
                          "'torch_geometric' package")
    assert "use .venv-fairchem1/bin/python" in msg



@needs_a_line
def test_predict_a_task_the_checkpoint_lacks(capsys, tmp_path) -> None:
    msg = refused(capsys, "predict", "--checkpoint", LEGACY_CKPT[LINE],
                  LEGACY / f"fairchem{LINE}" / "frames.extxyz", "--out", tmp_path / "p.csv",
                  "--task", "omat")
    want = {2: "error: task 'omat': esen_categorical_conserving.pt predicts energies for "
               "oc20; choose one of them",
            1: "error: --task omat: fairchem-core 1.10 checkpoints predict one energy; there "
               "are no tasks to choose between"}[LINE]
    assert msg == want
    assert not (tmp_path / "p.csv").exists()
