"""Screening end to end on fairchem-core 2.x with tiny EMT-trained models: the calculator
relaxes and runs MD, a direct-force model relaxes to fmax 0.05, `screen` ranks two
systems, and one active-learning round (see test_active_learning_round)."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import read, write
from ase.md.verlet import VelocityVerlet
from ase.optimize import BFGS, LBFGS

from tests.conftest import CONFIGS, TEST_SEED, TINY_BACKBONE

pytestmark = pytest.mark.slow

SLABS = ("Cu/fcc111", "Pt/fcc100")


def _small_slab(spec: str):
    from ase import build

    from fairchem_categorical.screening import prepare_slab

    metal, facet = spec.split("/")
    return prepare_slab(getattr(build, facet)(metal, size=(2, 2, 3), vacuum=6.0))


def emt_frames(slab, adsorbate: str, placements: int, rattles: int, seed: int,
               calculator=EMT) -> list:
    """EMT-labelled frames along LBFGS relaxations of fairchem-data-oc placements, plus
    rattles of the relaxed geometries (what the tiny models train on); ``calculator``
    (a factory) labels them instead of EMT where given."""
    from fairchem_categorical.fairchem2 import screening as tools
    from fairchem_categorical.screening import adsorbate_spec

    rng = np.random.default_rng(seed)
    spec = adsorbate_spec(adsorbate, tools.adsorbate_database())
    starts = [slab, *tools.place(slab, spec, placements, "heuristic", seed)]
    frames = []
    for start in starts:
        atoms = start.copy()
        atoms.calc = calculator()
        traj = []
        opt = LBFGS(atoms, logfile=None)
        opt.attach(lambda a=atoms, t=traj: t.append(a.positions.copy()), interval=1)
        opt.run(fmax=0.02, steps=60)
        free = atoms.get_tags() != 0
        picks = [traj[i] for i in np.unique(np.linspace(0, len(traj) - 1, 8).round().astype(int))]
        picks += [traj[-1] + np.where(free[:, None], rng.normal(0, 0.12, traj[-1].shape), 0)
                  for _ in range(rattles)]
        for pos in picks:
            frame = start.copy()
            frame.positions = pos
            frame.calc = atoms.calc
            e, f = frame.get_potential_energy(), frame.get_forces(apply_constraint=False)
            frame.calc = SinglePointCalculator(frame, energy=e, forces=f)
            frames.append(frame)
    return frames


def _dataset(frames: list, folder: Path) -> tuple[Path, Path]:
    from fairchem_categorical.bins import fit_bins_files, write_bins
    from fairchem_categorical.data import convert

    folder.mkdir(parents=True, exist_ok=True)
    write(folder / "frames.extxyz", frames)
    convert([folder / "frames.extxyz"], folder / "train", overwrite=True)
    convert([folder / "frames.extxyz"], folder / "val", overwrite=True)
    fit = fit_bins_files([folder / "train"], num_bins=64)
    return folder / "train", write_bins(fit, folder / "bins.yaml", [folder / "train"])


def _train(config: str, train: Path, bins: Path, run_dir: Path, epochs: int,
           *extra: str) -> Path:
    from fairchem_categorical.app.jobs import train as train_job

    return train_job(CONFIGS / config, str(train), str(train), bins, epochs, TEST_SEED, run_dir,
                     [*TINY_BACKBONE, "batch_size=4", "lr=3e-3", *extra])


@pytest.fixture(scope="module")
def screening_model(tmp_path_factory) -> Path:
    """Conserving categorical eSEN trained on both systems' EMT frames (O adsorbate)."""
    folder = tmp_path_factory.mktemp("screen_data")
    frames = [f for i, s in enumerate(SLABS)
              for f in emt_frames(_small_slab(s), "O", placements=3, rattles=4, seed=i)]
    train, bins = _dataset(frames, folder)
    # small-force data: weigh the force loss up, or the tiny model's energy stays flat
    return _train("esen_categorical_conserving.yaml", train, bins, folder / "runs", 30,
                  "forces_coefficient=50")


def test_calculator_relaxes_and_trajectory_keeps_uncertainty(screening_model, tmp_path):
    from fairchem_categorical.fairchem2 import screening as tools
    from fairchem_categorical.fairchem2.calculator import CategoricalCalculator
    from fairchem_categorical.screening import adsorbate_spec

    slab = _small_slab(SLABS[0])
    atoms = tools.place(slab, adsorbate_spec("*O", tools.adsorbate_database()), 1,
                        "random", seed=7)[0]
    atoms.calc = CategoricalCalculator.from_model_checkpoint(screening_model, device="cpu")
    start = atoms.get_potential_energy()
    BFGS(atoms, logfile=None).run(fmax=0.05, steps=100)
    assert atoms.get_potential_energy() < start
    assert np.linalg.norm(atoms.get_forces(), axis=1).max() < 0.05
    write(tmp_path / "relaxed.extxyz", atoms)
    back = read(tmp_path / "relaxed.extxyz")
    assert back.info["energy_uncertainty"] == pytest.approx(atoms.info["energy_uncertainty"])
    assert back.info["energy_low90"] < back.get_potential_energy() < back.info["energy_high90"]


def test_short_md_conserves_energy(screening_model):
    """Velocity Verlet on -dE/dx of the decoded energy: the total energy drifts far less
    than the kinetic energy it exchanges with the potential."""
    from fairchem_categorical.fairchem2.calculator import CategoricalCalculator

    atoms = emt_frames(_small_slab(SLABS[1]), "O", placements=1, rattles=0, seed=1)[-1]
    atoms.calc = CategoricalCalculator.from_model_checkpoint(screening_model, device="cpu")
    atoms.set_velocities(np.random.default_rng(0).normal(0, 0.03, (len(atoms), 3)))
    atoms.set_constraint()
    dyn = VelocityVerlet(atoms, timestep=0.5 * 0.09822694788464063 * 10)  # 0.5 fs
    totals, kinetic = [], []
    for _ in range(20):
        dyn.run(1)
        kinetic.append(atoms.get_kinetic_energy())
        totals.append(atoms.get_potential_energy() + kinetic[-1])
    assert np.ptp(totals) < 0.1 * np.ptp(kinetic)
    assert np.isfinite(atoms.info["energy_uncertainty"])


def test_screen_command_ranks_two_systems(screening_model, tmp_path):
    slab_files = []
    for spec in SLABS:
        path = tmp_path / f"{spec.replace('/', '_')}.extxyz"
        write(path, _small_slab(spec))
        slab_files.append(str(path))
    out = tmp_path / "screen"
    proc = subprocess.run(
        [sys.executable, "-m", "fairchem_categorical.app.cli", "screen", "--checkpoint",
         str(screening_model), "--slab", *slab_files, "--adsorbate", "*O",
         "--num-placements", "4", "--fmax", "0.1", "--steps", "60", "--top-k", "2",
         "--gas-references", str(_emt_references(tmp_path)), "--out", str(out)],
        capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "| system | conf. |" in proc.stdout
    with (out / "screen.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    systems = {r["system"] for r in rows}
    assert systems == {"Cu_fcc111+*O", "Pt_fcc100+*O"}
    for system in systems:
        mine = [r for r in rows if r["system"] == system]
        valid = [r for r in mine if not r["anomaly"]]
        assert valid, f"{system}: every configuration flagged"
        p = np.array([float(r["p_lowest"]) for r in valid])
        assert p.sum() == pytest.approx(1.0, abs=1e-9)
        sent = [r for r in valid if r["send_to_dft"] == "True"]
        assert sent and sum(float(r["p_lowest"]) for r in sent) >= 0.9 - 1e-9
        for r in valid:
            e = float(r["adsorption_energy"])
            assert float(r["adsorption_energy_low90"]) < e < float(r["adsorption_energy_high90"])
            assert float(r["adsorption_energy_uncertainty"]) > 0
            # E_ads = E(adslab) - E(slab) - E_gas(O)
            assert e == pytest.approx(float(r["energy"]) - float(r["slab_energy"])
                                      - float(r["gas_reference"]), abs=1e-9)
    frames = read(out / "structures.extxyz", index=":")
    assert len(frames) == len(rows) + 2  # two relaxed slabs
    assert all("energy_uncertainty" in f.info for f in frames)
    assert (out / "screen.png").stat().st_size > 10_000
    assert "send" in (out / "summary.md").read_text()


def _emt_references(folder: Path, calculator=EMT) -> Path:
    """EMT's (or ``calculator()``'s) per-atom gas references: half an O2 molecule."""
    import json

    from ase import Atoms

    o2 = Atoms("O2", positions=[(0, 0, 0), (0, 0, 1.21)], cell=[10, 10, 10])
    o2.calc = calculator()
    path = folder / "refs.json"
    path.write_text(json.dumps({"O": o2.get_potential_energy() / 2}))
    return path


def test_direct_force_model_relaxes_to_fmax_0_05(tmp_path):
    """The categorical direct-force head (symmetric magnitude support) relaxes an
    EMT-labelled slab it was trained on to fmax 0.05 eV/A."""
    from fairchem_categorical.fairchem2 import screening as tools
    from fairchem_categorical.fairchem2.calculator import CategoricalCalculator
    from fairchem_categorical.screening import adsorbate_spec

    slab = _small_slab(SLABS[0])
    frames = emt_frames(slab, "O", placements=1, rattles=20, seed=3)
    train, bins = _dataset(frames, tmp_path)
    ckpt = _train("esen_categorical_direct.yaml", train, bins, tmp_path / "runs", 40)
    start = tools.place(slab, adsorbate_spec("*O", tools.adsorbate_database()), 1,
                        "heuristic", seed=3)[0]  # the placement the training relaxed
    atoms = start.copy()
    atoms.calc = CategoricalCalculator.from_model_checkpoint(ckpt, device="cpu")
    assert BFGS(atoms, logfile=None).run(fmax=0.05, steps=200)
    assert np.linalg.norm(atoms.get_forces(), axis=1).max() < 0.05
    assert atoms.calc.results["forces_uncertainty"].shape == (len(atoms),)


def test_active_learning_round_adds_the_selected_and_their_error_falls(screening_model,
                                                                       tmp_path):
    """One round from the screening model: exactly the selected pool structures join the
    training set (labelled by EMT), and after fine-tuning through fairchem the model's
    energy error on them is lower than before."""
    import yaml

    from fairchem_categorical.active import run_active_learning
    from fairchem_categorical.app.active import CategoricalLearner
    from fairchem_categorical.fairchem2.calculator import CategoricalCalculator
    from tests.reference import out_of_support_by_hand

    # the labelled set is the pool's system (Pt(100) + O), so the fine-tune learns the
    # added structures instead of drifting towards another system (a Cu(111) start set
    # made their error rise in some runs)
    train = emt_frames(_small_slab(SLABS[1]), "O", placements=1, rattles=2, seed=0)
    # the pool holds only elements the model was fitted on: an unseen element (H of *OH)
    # has reference 0 eV in the bins, its targets are clamped, and no fine-tune fixes them
    pool = emt_frames(_small_slab(SLABS[1]), "O", placements=2, rattles=4, seed=5)
    bins = Path(screening_model).parents[4] / "bins.yaml"
    clamped = out_of_support_by_hand(pool, yaml.safe_load(bins.read_text()), forces=False)
    assert clamped["energy"]["outside"] == 0
    truth = [a.get_potential_energy() for a in pool]
    for atoms in pool:
        atoms.calc = None
    heldout = emt_frames(_small_slab(SLABS[1]), "O", placements=1, rattles=2, seed=6)
    heldout_dir = tmp_path / "heldout"
    _dataset(heldout, heldout_dir)
    learner = CategoricalLearner(CONFIGS / "esen_categorical_conserving.yaml", bins,
                                 heldout_dir / "train", tmp_path / "al", 0, 12,
                                 finetune_overrides=["batch_size=4", "lr=1e-3",
                                                     "forces_coefficient=50"],
                                 checkpoint=screening_model)
    log, labelled = run_active_learning(learner, train, pool, heldout, EMT(), rounds=1,
                                        per_round=3, strategy="uncertainty", fitted=True)
    chosen = log[0].selected
    assert len(chosen) == 3 and len(labelled) == len(train) + 3
    for atoms, i in zip(labelled[len(train):], chosen, strict=True):
        np.testing.assert_array_equal(atoms.positions, pool[i].positions)
        assert atoms.get_potential_energy() == pytest.approx(truth[i])
    # the most uncertain per atom were chosen
    before = CategoricalCalculator.from_model_checkpoint(screening_model, device="cpu")
    u = [r["energy_uncertainty"] / len(a) for r, a in
         zip(before.calculate_batch(pool), pool, strict=True)]
    assert sorted(chosen) == sorted(np.argsort(u)[::-1][:3].tolist())
    picked = [pool[i] for i in chosen]
    err_before = np.mean([abs(r["energy"] - truth[i]) for r, i in
                          zip(before.calculate_batch(picked), chosen, strict=True)])
    err_after = np.mean([abs(r["energy"] - truth[i]) for r, i in
                         zip(learner.predict(picked), chosen, strict=True)])
    assert err_after < err_before
    assert log[1].reference_calls == 3 and log[1].train_size == len(train) + 3


def test_uma_layout_checkpoint_finetuned_categorical_screens(screening_model, tmp_path):
    """A scalar UMA-layout checkpoint (escn_moe, dataset task oc20) made locally, fine-tuned
    with categorical heads through fairchem's fine-tuning path, used by the calculator and
    by screen."""
    import torch

    from fairchem_categorical.app.jobs import train as train_job
    from fairchem_categorical.app.screen import run_screen
    from fairchem_categorical.fairchem2.calculator import CategoricalCalculator

    folder = Path(screening_model).parents[4]
    train, bins = folder / "train", folder / "bins.yaml"
    uma = _train("uma_scalar_conserving.yaml", train, bins, tmp_path / "uma", 6)
    tuned = train_job(CONFIGS / "esen_categorical_finetune.yaml", str(train), str(train), bins,
                      6, 0, tmp_path / "ft", ["batch_size=4", "lr=3e-3",
                                              f"starting_checkpoint={uma}"])
    config = torch.load(tuned, map_location="cpu", weights_only=False).model_config
    assert config["backbone"]["model"].endswith("eSCNMDMoeBackbone")
    assert config["heads"]["energy"]["module"].endswith("CategoricalEnergyHead")
    calc = CategoricalCalculator.from_model_checkpoint(tuned, device="cpu")
    atoms = _small_slab(SLABS[0])
    atoms.calc = calc
    atoms.get_potential_energy()
    assert calc.results["energy_uncertainty"] > 0
    results = run_screen(tuned, [SLABS[0]], ["*O"], tmp_path / "screen", num_placements=2,
                         fmax=0.1, steps=30)
    p = [c.p_lowest for c in results[0].configurations if not c.anomalies]
    assert p and sum(p) == pytest.approx(1.0)
