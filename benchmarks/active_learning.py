"""Active learning: categorical uncertainty vs random vs a 5-model ensemble's disagreement.

    .venv/bin/python benchmarks/active_learning.py --out benchmarks/results [--rounds 3]

Data (embedded EMT generator): a starting set of 16 systems x 2 frames (every element of
the pool), a pool of 12 other systems x 6 frames (labels hidden), a held-out set of 10
systems x 4 frames from another random stream; bins fitted on the starting set. Each
strategy labels ``--per-round`` pool structures per round with EMT and fine-tunes through
fairchem (tiny eSEN, CPU-sized). The categorical strategies share the round-0 model;
every categorical (re)training is followed by fit-uncertainty (the labelled set,
calibrated on the held-out set), so the selection uses ``energy_uncertainty`` (histogram +
feature distance). Writes ``active_learning.md`` (per-round table + reference calls saved
at equal held-out error) and ``active_learning.png`` (held-out MAE vs reference calls).

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
    calls_saved,
    calls_to_reach,
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
    from ase.io import write

    from fairchem_categorical.data import convert

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--per-round", type=int, default=8)
    p.add_argument("--members", type=int, default=5,
                   help="ensemble size for the baseline; 0 skips it (categorical vs random)")
    p.add_argument("--work", type=Path,
                   default=REPO / "benchmarks" / "out" / "active_learning_work",
                   help="scratch folder (runs, datasets); one per concurrent run")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--finetune-epochs", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
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
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    start = time.time()
    # the start set covers the pool's elements (16 systems x 2 frames): bins fitted on a set
    # missing an element clamp every structure holding it (its reference is 0 eV), which
    # no amount of labelling fixes; the wider margin leaves room for what the pool brings
    # (out_of_support.json in each run says how many targets were clamped)
    start_systems = 16
    data = dict(labeller=args.labeller, cache=work / "labelled")
    train = frames(0, start_systems, 2, **data)
    pool = frames(start_systems, 12, 6, **data)
    heldout = frames(0, 10, 4, seed=1000, **data)
    for atoms in pool:
        atoms.calc = None
    write(work / "heldout.extxyz", heldout)
    convert([work / "heldout.extxyz"], work / "heldout", overwrite=True)
    write(work / "train.extxyz", train)
    bins = fit_bins_files([work / "train.extxyz"], num_bins=64, margin=args.margin)
    bins_path = write_bins(bins, work / "bins.yaml", [work / "train.extxyz"])
    heldout_dir = str(work / "heldout")
    say = print

    def categorical(name: str, ckpt: Path | None) -> CategoricalLearner:
        return CategoricalLearner(CONFIGS / "esen_categorical_conserving.yaml", bins_path,
                                  heldout_dir, work / name, args.epochs, args.finetune_epochs,
                                  TINY, seed=args.seed, checkpoint=ckpt, fit_uncertainty=True)

    t0 = time.time()
    round0 = jobs.train(CONFIGS / "esen_categorical_conserving.yaml",
                        str(write_dataset(train, work / "round0")), heldout_dir, bins_path,
                        args.epochs, args.seed, work / "round0_runs", TINY, fit=True)
    round0_seconds = time.time() - t0
    runs, seconds = {}, {}
    for name in ("uncertainty", "random"):
        say(f"== {name}")
        learner = categorical(name, round0)
        runs[name], _ = run_active_learning(
            learner, train, pool, heldout, reference_calculator(args.labeller), args.rounds,
            args.per_round, name,
            seed=args.seed, say=say, fitted=True)
        seconds[name] = round0_seconds + learner.train_seconds
    if args.members:
        say(f"== ensemble of {args.members}")
        ens = EnsembleLearner([scalar_member(CONFIGS / "esen_scalar_conserving.yaml",
                                             bins_path, heldout_dir, work / "ensemble",
                                             args.epochs, args.finetune_epochs,
                                             args.seed * args.members + s, TINY)
                               for s in range(args.members)])
        ens_name = f"ensemble of {args.members} (disagreement)"
        runs[ens_name], _ = run_active_learning(ens, train, pool, heldout,
                                                reference_calculator(args.labeller),
                                                args.rounds, args.per_round, "uncertainty",
                                                seed=args.seed, say=say)
        seconds[ens_name] = ens.train_seconds
    report(runs, seconds, args, time.time() - start)


def report(runs: dict, seconds: dict, args: argparse.Namespace, total: float) -> None:
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
    budget = runs["uncertainty"][-1].reference_calls
    saved = []
    for other in runs:
        if other == "uncertainty":
            continue
        need = calls_to_reach(runs["uncertainty"], final[other])
        saved.append([names.get(other, other), f"{final[other] * 1000:.2f}", budget,
                      "not within the budget" if np.isnan(need) else f"{need:.1f}",
                      f"{calls_saved(runs['uncertainty'], runs[other]):+.1f}"])
    saved_table = rows_table(
        ["compared with", "its held-out MAE at the budget (meV/atom)", "its reference calls",
         "categorical uncertainty needs", "reference calls saved"], saved)
    text = (f"{table}\n\nReference calls saved at equal held-out error (linear interpolation "
            f"between rounds; negative: the other strategy reached the categorical selection's "
            f"final error that many calls early, `active.calls_saved`):\n\n{saved_table}\n\n"
            "Training time (s, 2 busy CPU cores): "
            + ", ".join(f"{names.get(k, k)} {v:.0f}" for k, v in seconds.items())
            + f"; whole benchmark {total:.0f} s. One seed ({args.seed}).\n")
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "active_learning.md").write_text(text)
    (args.out / "active_learning.json").write_text(json.dumps(
        {k: [e.row() for e in log] for k, log in runs.items()}, indent=1))
    plot_active_learning({names.get(k, k): (np.array([e.reference_calls for e in log]),
                                            np.array([e.heldout_energy_mae_per_atom * 1000
                                                      for e in log]))
                          for k, log in runs.items()}, args.out / "active_learning.png")


NAMES = {"uncertainty": "categorical energy_uncertainty (fitted)", "random": "random"}


def summarize(folders: list[Path], out: Path) -> None:
    """Mean ± std over seeds of the held-out MAE per round, and of the reference calls the
    categorical selection saved against each other strategy at its final error."""
    from fairchem_categorical.active import RoundLog

    seeds = []
    for folder in folders:
        data = json.loads((folder / "active_learning.json").read_text())
        seeds.append({k: [RoundLog(**{**r, "selected": []}) for r in rows]
                      for k, rows in data.items()})
    rows, curves, spreads = [], {}, {}
    for key in seeds[0]:
        runs = [s[key] for s in seeds if key in s]
        mae = np.array([[e.heldout_energy_mae_per_atom * 1000 for e in log] for log in runs])
        calls = np.array([e.reference_calls for e in runs[0]])
        curves[NAMES.get(key, key)] = (calls, mae.mean(0))
        spreads[NAMES.get(key, key)] = mae.std(0)
        rows.append([NAMES.get(key, key), len(runs),
                     *[f"{m:.1f} ± {sd:.1f}" for m, sd in zip(mae.mean(0), mae.std(0),
                                                              strict=True)]])
    header = ["strategy", "seeds", *[f"MAE at {c} calls" for c in
                                     [e.reference_calls for e in seeds[0]["uncertainty"]]]]
    saved_rows = []
    for other in seeds[0]:
        if other == "uncertainty":
            continue
        per_seed = np.array([calls_saved(s["uncertainty"], s[other]) for s in seeds
                             if other in s])
        saved_rows.append([NAMES.get(other, other), len(per_seed),
                           " ".join(f"{v:+.1f}" for v in per_seed),
                           f"{np.nanmean(per_seed):+.1f} ± {np.nanstd(per_seed):.1f}"])
    text = (rows_table(header, rows) + "\n\nReference calls saved by the categorical selection"
            " at equal held-out error (`active.calls_saved`: positive, it reached the other"
            " strategy's final error that many calls early; negative, the other strategy"
            " reached the categorical selection's final error that many calls early):\n\n"
            + rows_table(["compared with", "seeds", "per seed", "mean ± std"], saved_rows)
            + "\n")
    print(text)
    out.mkdir(parents=True, exist_ok=True)
    (out / "active_learning_seeds.md").write_text(text)
    plot_active_learning(curves, out / "active_learning_seeds.png", spreads=spreads)


if __name__ == "__main__":
    main()
