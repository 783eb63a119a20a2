"""fit-bins streams its data (constant memory, two passes) and equals the in-memory fit;
the readers yield one structure at a time; fairchem's element references can be reused."""

from __future__ import annotations

import types
from pathlib import Path

import numpy as np
import pytest
import torch

from fairchem_categorical.app.cli import main
from fairchem_categorical.bins import (
    fit_bins_files,
    fit_element_references,
    read_fairchem_references,
)
from fairchem_categorical.data import read_frames
from fairchem_categorical.data.formats import iter_frames


def _in_memory(frames: list) -> dict[str, float | np.ndarray]:
    """The fit as the in-memory code computed it: every structure held at once."""
    zs = [a.numbers for a in frames]
    e = np.array([a.get_potential_energy() for a in frames])
    refs = fit_element_references(zs, e)
    per_atom = np.array([(en - refs[z].sum()) / len(z) for z, en in zip(zs, e, strict=True)])
    y = (per_atom - per_atom.mean()) / per_atom.std()
    fmax = max(np.linalg.norm(a.get_forces(), axis=1).max() for a in frames)
    return {"refs": refs, "mean": per_atom.mean(), "std": per_atom.std(), "lo": y.min(),
            "hi": y.max(), "fmax": fmax}


def test_iter_frames_is_lazy_and_yields_what_read_frames_reads(small_dataset) -> None:
    stream = iter_frames([small_dataset["train"]])
    assert isinstance(stream, types.GeneratorType)
    first = next(stream)
    rest = list(stream)  # exhausted: the LMDB closes (it opens once per process)
    frames = read_frames([small_dataset["train"]])
    assert first == frames[0]
    assert len(rest) == len(frames) - 1
    for a, b in zip(rest, frames[1:], strict=True):
        assert a == b and a.get_potential_energy() == b.get_potential_energy()


def test_streamed_fit_bins_equals_the_in_memory_fit(small_dataset) -> None:
    frames = read_frames([small_dataset["train"]])
    want = _in_memory(frames)
    fit = fit_bins_files([small_dataset["train"]], margin=0.0)
    # the references are a least-squares solve of nearly collinear compositions: summing
    # the normal equations per structure moves them in the 7th digit (numpy build), the
    # referenced energies the bins see agree to 1e-6 eV/atom
    np.testing.assert_allclose(fit.energy.element_references, want["refs"], atol=1e-5)
    assert fit.energy.mean == pytest.approx(want["mean"], abs=1e-6)
    assert fit.energy.std == pytest.approx(want["std"], rel=1e-5)
    assert fit.target_range == pytest.approx((want["lo"], want["hi"]), abs=1e-4)
    assert fit.force_max == pytest.approx(want["fmax"], rel=1e-12)
    assert fit.num_structures == len(frames)


@pytest.mark.parametrize("kind", ["pt", "npz", "checkpoint"])
def test_fairchems_references_are_kept_not_refitted(small_dataset, tmp_path, kind) -> None:
    refs = np.zeros(100)
    refs[[1, 6, 7, 8]] = [-3.5, -7.0, -8.0, -7.5]
    refs[[28, 29, 46, 47, 78, 79]] = [-5.0, -3.5, -5.5, -2.5, -6.0, -3.0]
    path = tmp_path / f"refs.{'npz' if kind == 'npz' else 'pt'}"
    state = {"element_references": torch.tensor(refs)}
    if kind == "npz":
        np.savez(path, element_references=refs)
    else:
        torch.save(state if kind == "pt" else {"config": {}, "state_dict": {},
                                               "elementrefs": {"energy": state}}, path)
    got = read_fairchem_references(path)
    np.testing.assert_array_equal(got, refs)
    fit = fit_bins_files([small_dataset["train"]], references=got)
    np.testing.assert_array_equal(fit.energy.element_references, refs)
    frames = read_frames([small_dataset["train"]])
    per_atom = [(a.get_potential_energy() - refs[a.numbers].sum()) / len(a) for a in frames]
    assert fit.energy.mean == pytest.approx(np.mean(per_atom), abs=1e-9)


def test_fit_bins_from_fairchem_at_the_command_line(small_dataset, tmp_path, capsys) -> None:
    import yaml

    refs = np.linspace(-1.0, -9.0, 100)
    np.savez(tmp_path / "refs.npz", coeff=refs)
    out = tmp_path / "bins.yaml"
    assert main(["fit-bins", str(small_dataset["train"]), "--from-fairchem",
                 str(tmp_path / "refs.npz"), "--out", str(out)]) == 0
    assert "(not refitted)" in capsys.readouterr().out
    np.testing.assert_allclose(yaml.safe_load(out.read_text())["energy"]["element_references"],
                               refs)
    (tmp_path / "bad.pt").write_bytes(b"not a torch file")
    assert main(["fit-bins", str(small_dataset["train"]), "--from-fairchem",
                 str(tmp_path / "bad.pt"), "--out", str(tmp_path / "b2.yaml")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --from-fairchem {tmp_path / 'bad.pt'}: not an element-"
                          "references file")
    np.savez(tmp_path / "other.npz", something=refs)
    assert main(["fit-bins", str(small_dataset["train"]), "--from-fairchem",
                 str(tmp_path / "other.npz"), "--out", str(tmp_path / "b3.yaml")]) == 2
    assert "an .npz without 'element_references'" in capsys.readouterr().err


def test_a_file_of_the_stream_is_named_when_it_is_broken(tmp_path: Path) -> None:
    (tmp_path / "empty.xyz").write_text("")
    with pytest.raises(ValueError, match="empty.xyz: no structures in file"):
        list(iter_frames([tmp_path / "empty.xyz"]))
