"""``fairchem-categorical``: the command line, arguments only.

Each ``cmd_*`` turns parsed arguments into one call of the library (``data``, ``bins``,
``report``) or of ``jobs`` (where a fairchem line is chosen) and prints what a person
needs; errors the library raises for bad input become one line on stderr and exit 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def _say(msg: str) -> None:
    print(msg, flush=True)


def cmd_make_dataset(args: argparse.Namespace) -> int:
    common = dict(progress=_say, overwrite=args.overwrite, fmt=args.format)
    if args.labeller == "emt":
        from fairchem_categorical.data import make_dataset, make_ood_datasets

        extra = {} if args.frames_per_system is None else {
            "frames_per_system": args.frames_per_system}
        paths = make_dataset(args.out, n_systems=args.n_systems, seed=args.seed, **common,
                             **extra)
        if args.ood_systems:
            paths.update(make_ood_datasets(Path(args.out) / "ood", n_systems=args.ood_systems,
                                           seed=args.seed + 1000, **common))
    else:
        from fairchem_categorical.realistic import (
            make_realistic_dataset,
            make_realistic_ood_datasets,
        )

        realistic = dict(labeller=args.labeller, workers=args.workers, **common)
        if args.frames_per_system is not None:
            realistic["frames_per_system"] = args.frames_per_system
        paths = make_realistic_dataset(args.out, args.n_systems, args.seed, **realistic)
        if args.ood_systems:
            paths.update(make_realistic_ood_datasets(Path(args.out) / "ood", args.ood_systems,
                                                     args.seed + 1000, **realistic))
    for split, path in paths.items():
        _say(f"{split}: {path}")
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    from fairchem_categorical.data import convert

    n = convert(args.inputs, args.out, overwrite=args.overwrite, fmt=args.format)
    _say(f"wrote {n} structures to {args.out}")
    return 0


def cmd_fit_bins(args: argparse.Namespace) -> int:
    from fairchem_categorical.app.checks import output_file
    from fairchem_categorical.bins import count_clipped, describe, fit_bins_files, write_bins
    from fairchem_categorical.histogram import HistogramSupport

    output_file(args.out)

    fit = fit_bins_files(args.data, num_bins=args.num_bins, level=args.level,
                         margin=args.margin, sigma_ratio=args.sigma_ratio, progress=_say)
    _say(describe(fit))
    for path in args.check or []:
        clipped, n = count_clipped([path], fit.energy, HistogramSupport.from_spec(fit.support))
        _say(f"{path}: {clipped} of {n} targets fall outside the support and would be clipped")
    _say(f"wrote {write_bins(fit, args.out, args.data)}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from fairchem_categorical.app.jobs import train

    _say(str(train(args.config, args.train_data, args.val_data, args.bins, args.max_epochs,
                   args.seed, args.run_dir, args.overrides, say=_say,
                   fit=args.fit_uncertainty, device=args.device)))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from fairchem_categorical.app.checks import output_file
    from fairchem_categorical.app.jobs import predict_files
    from fairchem_categorical.predictions import write_predictions

    output_file(args.out)  # before the prediction, not after
    preds = predict_files(args.checkpoint, args.data, batch_size=args.batch_size,
                          device=args.device, progress=_say,
                          inference_settings=args.inference_settings, task=args.task)
    csv_path, npz_path = write_predictions(preds, args.out)
    _say(f"wrote {csv_path} ({len(preds)} structures) and {npz_path}")
    if preds[0].energy_probs is not None and preds[0].ood_score != preds[0].ood_score:
        _say("note: energy_uncertainty and ood_score are empty: this checkpoint has no fitted "
             "epistemic state (run fit-uncertainty on it)")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from fairchem_categorical.app.checks import output_folder
    from fairchem_categorical.app.jobs import evaluate_checkpoint
    from fairchem_categorical.report.evaluate import evaluate_files, format_metrics, notes

    if args.checkpoint and args.predictions:
        raise ValueError("give --predictions (files predict wrote) or --checkpoint with "
                         "--data (predict now), not both")
    if args.checkpoint:
        if not args.data:
            raise ValueError("--checkpoint needs --data (and optionally --ood-data)")
        stray = [f for f, v in (("--npz", args.npz), ("--ood-predictions",
                                                      args.ood_predictions)) if v]
        if stray:
            raise ValueError(f"{' and '.join(stray)} go with --predictions, not --checkpoint "
                             "(with --checkpoint, give --ood-data)")
        metrics = evaluate_checkpoint(args.checkpoint, args.data, args.out, args.ood_data,
                                      progress=_say, device=args.device)
    elif args.predictions:
        stray = [f for f, v in (("--data", args.data), ("--ood-data", args.ood_data)) if v]
        if stray:
            raise ValueError(f"{' and '.join(stray)} need{'s' if len(stray) == 1 else ''} "
                             "--checkpoint (to predict them); with --predictions, give "
                             "--ood-predictions CSV")
        output_folder(args.out)
        metrics = evaluate_files(args.predictions, args.out, npz=args.npz,
                                 ood_predictions=args.ood_predictions, say=_say)
    else:
        raise ValueError("give --predictions CSV, or --checkpoint with --data")
    _say(format_metrics(metrics))
    for note in notes(metrics):
        _say(f"note: {note}")
    _say(f"wrote {Path(args.out) / 'metrics.json'} and plots in {args.out}")
    return 0


def _report_calibration(result: dict) -> None:
    _say(f"temperature {result['temperature']:.4f} (x{result['factor']:.4f} on the "
         "checkpoint's)")
    if "alpha" in result:
        _say(f"epistemic scale ({result['method']}) {result['alpha']:.4g}")
    for key in ("energy_nll", "miscalibration_area", "energy_mae", "energy_nll_uncertainty",
                "miscalibration_area_uncertainty"):
        before, after = result[key + "_before"], result[key + "_after"]
        if before == before or after == after:  # skip metrics that are NaN on both sides
            _say(f"{key}: {before:.4f} -> {after:.4f}")


def cmd_calibrate(args: argparse.Namespace) -> int:
    from fairchem_categorical.app.jobs import calibrate

    _report_calibration(calibrate(args.checkpoint, args.val, args.out,
                                  fit_temperature=args.fit_temperature, device=args.device))
    _say(str(Path(args.out)))
    return 0


def cmd_fit_uncertainty(args: argparse.Namespace) -> int:
    from fairchem_categorical.app.jobs import fit_uncertainty

    result = fit_uncertainty(args.checkpoint, args.train, args.val, args.out,
                             method=args.method, batch_size=args.batch_size,
                             device=args.device, fit_temperature=bool(args.fit_temperature),
                             progress=_say)
    if args.val:
        _report_calibration(result)
    else:
        _say("not calibrated (no --val): run calibrate before trusting energy_uncertainty")
    _say(str(Path(args.out)))
    return 0


def cmd_screen(args: argparse.Namespace) -> int:
    from fairchem_categorical.app.screen import run_screen

    run_screen(args.checkpoint, args.slab, args.adsorbate, args.out,
               num_placements=args.num_placements, fmax=args.fmax, steps=args.steps,
               mode=args.mode, coverage=args.coverage, budget=args.budget, top_k=args.top_k,
               gas_references=args.gas_references, seed=args.seed, device=args.device,
               vasp=args.vasp, say=_say)
    return 0


def cmd_active_learn(args: argparse.Namespace) -> int:
    from fairchem_categorical.app.active import run_active

    log = run_active(args.train, args.pool, args.heldout, args.bins, args.out,
                     rounds=args.rounds, per_round=args.per_round, strategy=args.strategy,
                     ensemble=args.ensemble, config=args.config, epochs=args.epochs,
                     finetune_epochs=args.finetune_epochs, overrides=args.overrides,
                     seed=args.seed, checkpoint=args.checkpoint, say=_say,
                     device=args.device)
    _say(f"wrote {Path(args.out) / 'active_learning.csv'} ({len(log)} rounds)")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from fairchem_categorical.app.demo import run_demo

    run_demo(Path(args.out), max_epochs=args.max_epochs, n_systems=args.n_systems,
             seed=args.seed, device=args.device)
    return 0


# -- parser --------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    from fairchem_categorical.epistemic import DEFAULT_METHOD, METHODS

    temperature_flag = ("--fit-temperature",)
    temperature_kw = dict(
        action="store_true", default=None,
        help="with a fitted epistemic state, refit the temperature together with the "
             "epistemic scale (default: hold it; a free joint fit can collapse or flatten the "
             "histogram and move the energies). Without one, the temperature is always fitted")
    device_kw = dict(default="cpu", help="where the model runs: cpu (default), cuda (the "
                     "current GPU) or cuda:N")
    p = argparse.ArgumentParser(prog="fairchem-categorical", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    # the dataset formats of fairchem_categorical.data.FORMATS
    fmt_kw = dict(choices=("aselmdb", "pyg-lmdb"), default="aselmdb",
                  help="aselmdb: ASE-LMDB for fairchem-core 2.x (default); pyg-lmdb: pickled "
                       "torch-geometric LMDB for fairchem-core 1.10 (needs .venv-fairchem1)")
    s = sub.add_parser("make-dataset", help="generate labelled adsorbate+slab data",
                       description="Generate adsorbate+slab frames and write train/val/test "
                                   "dataset folders (with metadata.npz), split by system. "
                                   "With --labeller emt (the default): the embedded set, fcc "
                                   "metal slabs labelled by ASE's EMT in seconds. With "
                                   "--labeller sevennet:7net-0: OC20-like systems built with "
                                   "fairchem-data-oc's slab, adsorbate and placement tools, "
                                   "labelled by SevenNet-0 (a universal potential trained on "
                                   "MPtrj PBE bulk data: a stand-in for DFT, not DFT; needs "
                                   "pip install 'fairchem-categorical[realistic]'); minutes to "
                                   "an hour, cached per system in OUT/.cache (a re-run "
                                   "resumes).")
    s.add_argument("--out", required=True, help="output folder")
    s.add_argument("--n-systems", "--systems", dest="n_systems", type=int, default=24,
                   help="systems (slab + adsorbate placements) to generate (default 24)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--labeller", default="emt",
                   help="emt (default) or sevennet:7net-0 (OC20-like realistic systems)")
    s.add_argument("--ood-systems", type=int, default=0,
                   help="also write the out-of-distribution splits to OUT/ood/<split>, each "
                        "with this many systems (default 0: none)")
    s.add_argument("--frames-per-system", type=int, default=None,
                   help="frames per system: about half along the relaxation, the rest "
                        "rattles (default 6)")
    s.add_argument("--workers", type=int, default=None,
                   help="labelling processes (realistic set; default one per core)")
    s.add_argument("--overwrite", action="store_true")
    s.add_argument("--format", **fmt_kw)
    s.set_defaults(func=cmd_make_dataset)

    s = sub.add_parser("convert", help="ASE-readable files with energies+forces -> LMDB dataset",
                       description="Convert extxyz / traj / ASE db / LMDB files to an ASE-LMDB "
                                   "(fairchem 2.x) or pyg-lmdb (fairchem 1.10) dataset.")
    s.add_argument("inputs", nargs="+")
    s.add_argument("--out", required=True,
                   help="output file (.aselmdb, or .lmdb with --format pyg-lmdb) or folder "
                        "(written as FOLDER/data.aselmdb or FOLDER/data.lmdb); metadata.npz "
                        "lands beside it")
    s.add_argument("--overwrite", action="store_true")
    s.add_argument("--format", **fmt_kw)
    s.set_defaults(func=cmd_convert)

    s = sub.add_parser("fit-bins", help="propose the histogram support from training data",
                       description="Stream the data, fit element references and normalisation "
                                   "as the configs apply them, and write the bins YAML.")
    s.add_argument("data", nargs="+", help="training data (ASE-LMDB or any ASE-readable file)")
    s.add_argument("--num-bins", type=int, default=128)
    s.add_argument("--level", choices=("per_atom", "total"), default="per_atom")
    s.add_argument("--margin", type=float, default=0.25,
                   help="widen the support by this fraction of the observed range per side")
    s.add_argument("--sigma-ratio", type=float, default=0.75)
    s.add_argument("--check", nargs="*", help="report how many targets of these files clip")
    s.add_argument("--out", required=True)
    s.set_defaults(func=cmd_fit_bins)

    s = sub.add_parser("train", help="train with fairchem's own entry point",
                       description="Runs `fairchem -c CONFIG` (fairchem 2.x configs) or "
                                   "`fairchem --mode train --config-yml CONFIG` (1.10 configs) "
                                   "with the plugin's heads; extra arguments are passed to "
                                   "fairchem as overrides. Last line: final checkpoint "
                                   "(fitted, with --fit-uncertainty).")
    s.add_argument("config")
    s.add_argument("--train-data")
    s.add_argument("--val-data")
    s.add_argument("--bins", help="bins YAML written by fit-bins")
    s.add_argument("--max-epochs", type=int)
    s.add_argument("--seed", type=int)
    s.add_argument("--run-dir", help="default: runs/fairchem1 or runs/fairchem2")
    s.add_argument("--device", default=None,
                   help="cpu, cuda or cuda:N (sets fairchem's device; default: the config's "
                        "job.device_type on 2.x, CUDA when present on 1.10)")
    s.add_argument("--fit-uncertainty", action="store_true",
                   help="then fit-uncertainty on --train-data, calibrated on --val-data; the "
                        "last line is the fitted checkpoint (<checkpoint>_fitted.pt)")
    s.add_argument("overrides", nargs="*",
                   help="fairchem overrides: Hydra's lr=1e-3 (2.x), --optim.lr_initial=1e-3 (1.10)")
    s.set_defaults(func=cmd_train)

    s = sub.add_parser("predict", help="energies, forces and uncertainties to CSV + NPZ",
                       description="One CSV row per structure; per-atom arrays in an NPZ.")
    s.add_argument("--checkpoint", required=True)
    s.add_argument("data", nargs="+")
    s.add_argument("--out", required=True, help="CSV path; the NPZ goes beside it")
    s.add_argument("--batch-size", type=int, default=8,
                   help="structures per forward pass (one graph per batch)")
    s.add_argument("--device", **device_kw)
    s.add_argument("--inference-settings", metavar="PRESET",
                   help="fairchem 2.x inference settings: batch (default: unmerged, "
                        "uncompiled, any mix of structures), traineval, high-precision or "
                        "multigpu (merge_mole + torch.compile: one composition per run), "
                        "default (UMA Nitro, which runs only fairchem's released UMA "
                        "weights: fairchem falls back to multigpu)")
    s.add_argument("--task", metavar="NAME",
                   help="fairchem 2.x: which of the checkpoint's tasks (datasets) to predict, "
                        "e.g. oc20 or omat for a UMA model (default: its first)")
    s.set_defaults(func=cmd_predict)

    s = sub.add_parser("evaluate", help="accuracy, ranking, calibration and OOD metrics + plots",
                       description="metrics.json, a printed table and PNG plots from predict's "
                                   "CSV/NPZ (or straight from a checkpoint and data).")
    s.add_argument("--predictions", help="CSV written by predict (its .npz beside it)")
    s.add_argument("--npz", help="the NPZ, if not beside the CSV")
    s.add_argument("--ood-predictions", help="predictions on out-of-distribution data")
    s.add_argument("--checkpoint", help="predict first with this checkpoint")
    s.add_argument("--data", nargs="*", help="with --checkpoint: in-distribution data")
    s.add_argument("--ood-data", nargs="*", help="with --checkpoint: out-of-distribution data")
    s.add_argument("--device", **device_kw)
    s.add_argument("--out", required=True, help="output folder")
    s.set_defaults(func=cmd_evaluate)

    s = sub.add_parser("calibrate", help="fit the temperature (and epistemic scale) on "
                                         "validation data",
                       description="With a fitted epistemic state (fit-uncertainty): fit the "
                                   "epistemic scale that minimises the NLL of validation "
                                   "targets under energy_uncertainty's distribution (with "
                                   "--fit-temperature, the temperature too). Without one: the "
                                   "temperature. Stored in a copy of the checkpoint; predict "
                                   "applies it.")
    s.add_argument("--checkpoint", required=True)
    s.add_argument("--val", nargs="+", required=True, help="validation data")
    s.add_argument("--out", required=True, help="the calibrated checkpoint to write")
    s.add_argument("--device", **device_kw)
    s.add_argument(*temperature_flag, **temperature_kw)
    s.set_defaults(func=cmd_calibrate)

    s = sub.add_parser("fit-uncertainty", help="fit the epistemic uncertainty after training",
                       description="One pass of the trained model over its training data "
                                   "fits the density of the energy head's features (what the "
                                   "model has seen); the state goes into a copy of the "
                                   "checkpoint, so predict writes energy_uncertainty, "
                                   "ood_score and atom_ood_score. With --val, the temperature "
                                   "and the epistemic scale are then fitted on it (calibrate).")
    s.add_argument("--checkpoint", required=True)
    s.add_argument("--train", nargs="+", required=True, help="the training data")
    s.add_argument("--val", nargs="*", help="validation data to calibrate on")
    s.add_argument("--out", required=True, help="the checkpoint to write")
    s.add_argument("--method", choices=METHODS, default=None,
                   help=f"what ood_score and energy_uncertainty use (default {DEFAULT_METHOD}; "
                        "every method's score is computed)")
    s.add_argument("--batch-size", type=int, default=8)
    s.add_argument("--device", **device_kw)
    s.add_argument(*temperature_flag, **temperature_kw)
    s.set_defaults(func=cmd_fit_uncertainty)

    s = sub.add_parser("screen", help="adsorption-energy screening with uncertainty",
                       description="Place an adsorbate on slabs (fairchem-data-oc), relax "
                                   "with the checkpoint's calculator, flag anomalies, rank "
                                   "adsorption energies with intervals and P(lowest), and "
                                   "recommend which configurations to send to DFT.")
    s.add_argument("--checkpoint", required=True)
    s.add_argument("--slab", nargs="+", required=True,
                   help="ASE-readable slab files, or METAL/FACET (e.g. Cu/fcc111)")
    s.add_argument("--adsorbate", nargs="+", required=True,
                   help="fairchem-data-oc SMILES (*O, *OH, *CO, ...) or ASE molecule names")
    s.add_argument("--num-placements", type=int, default=10)
    s.add_argument("--mode", default="heuristic",
                   choices=("heuristic", "random", "random_site_heuristic_placement"),
                   help="fairchem-data-oc's placement mode")
    s.add_argument("--fmax", type=float, default=0.05)
    s.add_argument("--steps", type=int, default=200)
    pick = s.add_mutually_exclusive_group()
    pick.add_argument("--coverage", type=float, default=0.9,
                      help="send the fewest configurations whose P(lowest) sums to this")
    pick.add_argument("--budget", type=int, help="send the k most likely lowest instead")
    s.add_argument("--top-k", type=int, default=5, help="AdsorbML's fixed top-k, reported")
    s.add_argument("--gas-references", help="JSON {element: eV}; default OC20's H, C, N, O")
    s.add_argument("--vasp", action="store_true",
                   help="write VASP inputs (fairchem-data-oc) for the recommended ones")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--device", **device_kw)
    s.add_argument("--out", required=True, help="output folder")
    s.set_defaults(func=cmd_screen)

    s = sub.add_parser("active-learn", help="label the most uncertain structures, fine-tune, "
                                            "repeat (EMT as the reference)",
                       description="Active learning with fairchem 2.x configs: train (or start "
                                   "from --checkpoint), score a pool, label the most uncertain "
                                   "structures with EMT, fine-tune through fairchem, repeat; "
                                   "logs held-out error and Spearman(uncertainty, error) per "
                                   "round to OUT/active_learning.csv. Extra arguments are "
                                   "Hydra overrides for the first training.")
    s.add_argument("--train", required=True, help="starting labelled set (data folder/file)")
    s.add_argument("--pool", required=True, help="unlabelled candidates (labels are ignored)")
    s.add_argument("--heldout", required=True, help="labelled held-out set")
    s.add_argument("--bins", required=True, help="bins YAML (fit-bins on --train)")
    s.add_argument("--checkpoint", help="start from this categorical checkpoint (no round-0 "
                                        "training)")
    s.add_argument("--config", help="first-training config (default: the conserving eSEN)")
    s.add_argument("--rounds", type=int, default=3)
    s.add_argument("--per-round", type=int, default=4)
    s.add_argument("--strategy", choices=("uncertainty", "random"), default="uncertainty")
    s.add_argument("--ensemble", type=int, default=0,
                   help="use an ensemble of N scalar models and their disagreement instead")
    s.add_argument("--epochs", type=int, default=20)
    s.add_argument("--finetune-epochs", type=int, default=8)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", required=True)
    s.add_argument("--device", default=None,
                   help="cpu, cuda or cuda:N: where the models train and score (default: the "
                        "config's device for training, CUDA when present for scoring)")
    s.add_argument("overrides", nargs="*")
    s.set_defaults(func=cmd_active_learn)

    s = sub.add_parser("demo", help="the main job on the embedded data",
                       description="Make data, fit bins, train categorical and scalar eSEN, "
                                   "predict, print the comparison table, plot distributions.")
    s.add_argument("--out", default="demo_out")
    s.add_argument("--max-epochs", type=int, default=None)
    s.add_argument("--n-systems", type=int, default=24)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--device", default=None,
                   help="cpu, cuda or cuda:N: where both models train and predict (default: "
                        "the configs' device for training, the CPU for predictions)")
    s.set_defaults(func=cmd_demo)
    return p


#: set to 1 to see the traceback behind an error message
DEBUG_ENV = "FAIRCHEM_CATEGORICAL_DEBUG"


def main(argv: list[str] | None = None) -> int:
    args, unknown = build_parser().parse_known_args(argv)
    if unknown:
        if args.command not in ("train", "active-learn"):
            build_parser().error(f"unrecognized arguments: {' '.join(unknown)}")
        args.overrides = [*args.overrides, *unknown]
    try:
        return args.func(args)
    # bad input, files that cannot be read or written, a missing optional package: one
    # line that names the problem (FileNotFoundError, PermissionError, ... are OSErrors)
    except (ValueError, OSError, RuntimeError, ImportError) as err:
        if os.environ.get(DEBUG_ENV):
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
