"""Active learning: categorical uncertainty vs random vs diversity-aware batches vs a
5-model ensemble's disagreement, over seeds, on the whole learning curve.

    .venv/bin/python benchmarks/active_learning.py --out benchmarks/results --seeds 0 1 2 3 4

Data (embedded EMT generator): a starting set of 16 systems x 2 frames (every element of
the pool), a pool of ``--pool-systems`` other systems x ``--pool-frames`` frames (labels
hidden), a scored held-out set of 10 systems x 4 frames from another random stream, and a
calibration set of 6 systems x 4 frames from a third: training validates and
fit-uncertainty calibrates its alpha on the calibration set, never on the scored one. Bins
are fitted on the starting set. Each strategy labels ``--per-round`` pool structures per
round with the reference and fine-tunes through fairchem (tiny eSEN, CPU-sized). The
categorical strategies (``--strategies``: uncertainty, random, per_system, diverse; see
``fairchem_categorical.active``) share the round-0 model; every categorical (re)training is
followed by fit-uncertainty, so the selection uses ``energy_uncertainty``.

Per seed (model initialisation and random draws; the data stay fixed) it writes
``seedN/active_learning.{md,json,png}``; over the seeds ``active_learning_seeds.{md,png}``:
the area under the learning curve (mean held-out MAE over the calls budget,
``active.learning_curve_area``) as the headline, and the reference calls each strategy
saves against random and the ensemble at equal error, averaged over the whole curve
(``active.calls_saved_curve``), mean and std over seeds.

``--labeller sevennet:7net-0`` runs the same on the realistic set (OC20-like systems of
``fairchem_categorical.realistic``, labelled, and the pool's picks labelled, by SevenNet-0);
its labelling is cached in ``--work``/labelled (a re-run reuses it). Its bulks hold more
elements than 16 start systems may cover: check ``out_of_support.json`` in the runs.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from fairchem_categorical.active import (  # noqa: E402
    STRATEGIES,
    RoundLog,
    calls_saved,
    calls_saved_curve,
    calls_to_reach,
    learning_curve_area,
    run_active_learning,
)
from fairchem_categorical.app import jobs  # noqa: E402
from fairchem_categorical.app.active import (  # noqa: E402
    CategoricalLearner,
    EnsembleLearner,
    scalar_member,
    write_dataset,
)
from fairchem_categorical.bins import fit_bins_files, write_bins  # noqa: E402
from fairchem_categorical.data import generate_frames  # noqa: E402
from fairchem_categorical.report.plots import plot_active_learning  # noqa: E402
from fairchem_categorical.report.tables import rows_table  # noqa: E402

CONFIGS = REPO / "configs" / "fairchem2"
TINY = ["backbone.sphere_channels=16", "backbone.hidden_channels=16",
        "backbone.edge_channels=16", "backbone.lmax=1", "backbone.mmax=1",
        "backbone.num_distance_basis=32", "batch_size=4", "lr=3e-3"]


def frames(first: int, n: int, per: int, seed: int = 0, labeller: str = "emt",
           cache: Path | None = None) -> list:
    """Systems first..first+n-1 of the generator's stream ``seed``: the embedded one for
    ``emt``, else the realistic one with that labeller (cached in ``cache``)."""
    if labeller == "emt":
        all_frames = generate_frames(n_systems=first + n, frames_per_system=per, seed=seed)
    else:
        from fairchem_categorical.realistic import generate_realistic_frames

        all_frames, _ = generate_realistic_frames(first + n, cache, seed, labeller,
                                                  frames_per_system=per, first=first)
    return [f for f in all_frames if f.info["sid"] >= first]


def reference_calculator(labeller: str):
    """The calculator that labels the pool's picks: EMT, or the realistic set's labeller."""
    from fairchem_categorical.data.labellers import labeller as named

    return named(labeller)()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--per-round", type=int, default=8)
    p.add_argument("--pool-systems", type=int, default=12)
    p.add_argument("--pool-frames", type=int, default=6)
    p.add_argument("--strategies", nargs="+", default=["uncertainty", "random", "diverse"],
                   choices=STRATEGIES, help="categorical selection strategies to compare")
    p.add_argument("--members", type=int, default=5,
                   help="ensemble size for the baseline; 0 skips it (categorical vs random)")
    p.add_argument("--work", type=Path,
                   default=REPO / "benchmarks" / "out" / "active_learning_work",
                   help="scratch folder (runs, datasets); one per concurrent run")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--finetune-epochs", type=int, default=8)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--margin", type=float, default=1.0,
                   help="fit-bins margin (fraction of the start set's range on each side)")
    p.add_argument("--labeller", default="emt",
                   help="emt (the embedded set) or sevennet:7net-0 (the realistic set)")
    p.add_argument("--summarize", type=Path, nargs="+", metavar="DIR",
                   help="no training: combine the active_learning.json of earlier runs (one "
                        "per seed) into --out/active_learning_seeds.{md,png}")
    args = p.parse_args()
    if args.summarize:
        summarize(args.summarize, args.out)
        return
    folders = []
    for seed in args.seeds:
        folders.append(args.out / f"seed{seed}")
        run_seed(args, seed, args.work / f"seed{seed}", folders[-1])
    summarize(folders, args.out)


def run_seed(args: argparse.Namespace, seed: int, work: Path, out: Path) -> None:
    """Every strategy once with model seed ``seed``; writes ``out/active_learning.*``."""
    from ase.io import write

    from fairchem_categorical.data import convert

    work.mkdir(parents=True, exist_ok=True)
    start = time.time()
    # the start set covers the pool's elements (16 systems x 2 frames): bins fitted on a set
    # missing an element clamp every structure holding it (its reference is 0 eV), which
    # no amount of labelling fixes; the wider margin leaves room for what the pool brings
    # (out_of_support.json in each run says how many targets were clamped)
    start_systems = 16
    data = dict(labeller=args.labeller, cache=args.work / "labelled")
    train = frames(0, start_systems, 2, **data)
    pool = frames(start_systems, args.pool_systems, args.pool_frames, **data)
    heldout = frames(0, 10, 4, seed=1000, **data)
    calibration = frames(0, 6, 4, seed=2000, **data)
    for atoms in pool:
        atoms.calc = None
    write(work / "calibration.extxyz", calibration)
    convert([work / "calibration.extxyz"], work / "calibration", overwrite=True)
    write(work / "train.extxyz", train)
    bins = fit_bins_files([work / "train.extxyz"], num_bins=64, margin=args.margin)
    bins_path = write_bins(bins, work / "bins.yaml", [work / "train.extxyz"])
    calibration_dir = str(work / "calibration")  # validation and alpha; never scored
    say = print

    def categorical(name: str, ckpt: Path | None) -> CategoricalLearner:
        return CategoricalLearner(CONFIGS / "esen_categorical_conserving.yaml", bins_path,
                                  calibration_dir, work / name, args.epochs,
                                  args.finetune_epochs, TINY, seed=seed, checkpoint=ckpt,
                                  fit_uncertainty=True)

    t0 = time.time()
    round0 = jobs.train(CONFIGS / "esen_categorical_conserving.yaml",
                        str(write_dataset(train, work / "round0")), calibration_dir,
                        bins_path, args.epochs, seed, work / "round0_runs", TINY, fit=True)
    round0_seconds = time.time() - t0
    runs, seconds = {}, {}
    for name in args.strategies:
        say(f"== seed {seed}: {name}")
        learner = categorical(name, round0)
        runs[name], _ = run_active_learning(
            learner, train, pool, heldout, reference_calculator(args.labeller), args.rounds,
            args.per_round, name, seed=seed, say=say, fitted=True)
        seconds[name] = round0_seconds + learner.train_seconds
    if args.members:
        say(f"== seed {seed}: ensemble of {args.members}")
        ens = EnsembleLearner([scalar_member(CONFIGS / "esen_scalar_conserving.yaml",
                                             bins_path, calibration_dir, work / "ensemble",
                                             args.epochs, args.finetune_epochs,
                                             seed * args.members + s, TINY)
                               for s in range(args.members)])
        ens_name = f"ensemble of {args.members} (disagreement)"
        runs[ens_name], _ = run_active_learning(ens, train, pool, heldout,
                                                reference_calculator(args.labeller),
                                                args.rounds, args.per_round, "uncertainty",
                                                seed=seed, say=say)
        seconds[ens_name] = ens.train_seconds
    report(runs, seconds, args, seed, out, time.time() - start)


def report(runs: dict, seconds: dict, args: argparse.Namespace, seed: int, out: Path,
           total: float) -> None:
    names = NAMES
    rows = []
    for key, log in runs.items():
        for e in log:
            rows.append([names.get(key, key), e.round, e.reference_calls, e.train_size,
                         f"{e.heldout_energy_mae_per_atom * 1000:.2f}",
                         f"{e.heldout_forces_mae:.4f}", f"{e.spearman_uncertainty_error:.3f}"])
    table = rows_table(["strategy", "round", "reference calls", "training structures",
                        "held-out energy MAE (meV/atom)", "held-out force MAE (eV/A)",
                        "Spearman(uncertainty, error)"], rows)
    final = {k: log[-1].heldout_energy_mae_per_atom for k, log in runs.items()}
    ours = "uncertainty" if "uncertainty" in runs else next(iter(runs))
    budget = runs[ours][-1].reference_calls
    saved = []
    for other in runs:
        if other == ours:
            continue
        need = calls_to_reach(runs[ours], final[other])
        saved.append([names.get(other, other), f"{final[other] * 1000:.2f}", budget,
                      "not within the budget" if np.isnan(need) else f"{need:.1f}",
                      f"{calls_saved(runs[ours], runs[other]):+.1f}",
                      f"{calls_saved_curve(runs[ours], runs[other]):+.1f}"])
    saved_table = rows_table(
        ["compared with", "its held-out MAE at the budget (meV/atom)", "its reference calls",
         f"{names.get(ours, ours)} needs", "calls saved at its final error",
         "calls saved over the whole curve"], saved)
    areas = ", ".join(f"{names.get(k, k)} {area(log):.2f}" for k, log in runs.items())
    text = (f"{table}\n\nArea under the learning curve (mean held-out MAE over the calls "
            f"budget, meV/atom): {areas}\n\nReference calls {names.get(ours, ours)} "
            "saved at equal held-out error (negative: the other strategy was that many calls "
            "early): at the other's final error (`active.calls_saved`), and averaged over the "
            "error range both curves reach (`active.calls_saved_curve`):"
            f"\n\n{saved_table}\n\n"
            "Training time (s, 2 busy CPU cores): "
            + ", ".join(f"{names.get(k, k)} {v:.0f}" for k, v in seconds.items())
            + f"; whole benchmark {total:.0f} s. One seed ({seed}).\n")
    print(text)
    out.mkdir(parents=True, exist_ok=True)
    (out / "active_learning.md").write_text(text)
    (out / "active_learning.json").write_text(json.dumps(
        {k: [e.row() for e in log] for k, log in runs.items()}, indent=1))
    plot_active_learning({names.get(k, k): (np.array([e.reference_calls for e in log]),
                                            np.array([e.heldout_energy_mae_per_atom * 1000
                                                      for e in log]))
                          for k, log in runs.items()}, out / "active_learning.png")


NAMES = {"uncertainty": "categorical energy_uncertainty (fitted)", "random": "random",
         "per_system": "most uncertain per system", "diverse": "uncertainty x distance"}


def area(log: list[RoundLog]) -> float:
    """Area under a run's learning curve, as the mean held-out MAE (meV/atom)."""
    return learning_curve_area([e.reference_calls for e in log],
                               [e.heldout_energy_mae_per_atom * 1000 for e in log])


def _mean_std(values: np.ndarray, fmt: str = "{:+.1f}") -> str:
    values = np.asarray(values, float)
    return f"{fmt.format(np.nanmean(values))} ± {fmt.format(np.nanstd(values)).lstrip('+')}"


def summarize(folders: list[Path], out: Path) -> None:
    """Over seeds (one run folder each): the held-out MAE per round and the area under the
    learning curve per strategy (mean ± std), and the reference calls each strategy saved
    against random and the ensemble over the whole curve (and at the other's final error)."""
    seeds = []
    for folder in folders:
        data = json.loads((folder / "active_learning.json").read_text())
        seeds.append({k: [RoundLog(**{**r, "selected": []}) for r in rows]
                      for k, rows in data.items()})
    keys = [k for k in seeds[0] if all(k in s for s in seeds)]
    rows, curves, spreads, headline = [], {}, {}, []
    for key in keys:
        runs = [s[key] for s in seeds]
        mae = np.array([[e.heldout_energy_mae_per_atom * 1000 for e in log] for log in runs])
        calls = np.array([e.reference_calls for e in runs[0]])
        curves[NAMES.get(key, key)] = (calls, mae.mean(0))
        spreads[NAMES.get(key, key)] = mae.std(0)
        rows.append([NAMES.get(key, key), len(runs),
                     *[f"{m:.1f} ± {sd:.1f}" for m, sd in zip(mae.mean(0), mae.std(0),
                                                              strict=True)]])
        areas = np.array([area(log) for log in runs])
        paired = "-"
        if key != "random" and all("random" in s for s in seeds):
            paired = _mean_std(areas - np.array([area(s["random"]) for s in seeds]), "{:+.2f}")
        headline.append([NAMES.get(key, key), len(runs), _mean_std(areas, "{:.2f}"),
                         " ".join(f"{v:.2f}" for v in areas), paired])
    header = ["strategy", "seeds", *[f"MAE at {c} calls" for c in
                                     [e.reference_calls for e in seeds[0][keys[0]]]]]
    baselines = [k for k in keys if k == "random" or k.startswith("ensemble")]
    saved_rows = []
    for base in baselines:
        for key in keys:
            if key == base or key in baselines and baselines.index(key) < baselines.index(base):
                continue
            curve = np.array([calls_saved_curve(s[key], s[base]) for s in seeds])
            final = np.array([calls_saved(s[key], s[base]) for s in seeds])
            saved_rows.append([NAMES.get(key, key), NAMES.get(base, base),
                               " ".join("n/a" if np.isnan(v) else f"{v:+.1f}" for v in curve),
                               _mean_std(curve),
                               _mean_std(final)])
    text = ("Area under the learning curve (held-out energy MAE averaged over the reference-"
            "calls budget, meV/atom; lower is better; `active.learning_curve_area`). "
            "Strategies of one seed share the round-0 model, so the difference from random "
            "within a seed is the comparison whose spread counts:\n\n"
            + rows_table(["strategy", "seeds", "area, mean ± std", "per seed",
                          "minus random's, same seed (mean ± std)"], headline)
            + "\n\nReference calls saved at equal held-out error, averaged over the error "
            "range both curves reach (`active.calls_saved_curve`; positive: the strategy got "
            "there that many calls earlier), and, for comparison, at the other's final error "
            "only (`active.calls_saved`):\n\n"
            + rows_table(["strategy", "against", "whole curve, per seed",
                          "whole curve, mean ± std", "at the final error, mean ± std"],
                         saved_rows)
            + "\n\nHeld-out energy MAE (meV/atom) per round, mean ± std over seeds:\n\n"
            + rows_table(header, rows) + "\n")
    print(text)
    out.mkdir(parents=True, exist_ok=True)
    (out / "active_learning_seeds.md").write_text(text)
    plot_active_learning(curves, out / "active_learning_seeds.png", spreads=spreads)


if __name__ == "__main__":
    main()
