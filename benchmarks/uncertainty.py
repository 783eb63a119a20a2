"""Categorical (one model) vs scalar vs deep ensemble of scalar eSEN: errors, uncertainty, OOD.

    .venv/bin/python benchmarks/uncertainty.py --out benchmarks/out   (or: make benchmark)
    .venv/bin/python benchmarks/uncertainty.py --quick --out /tmp/bench   (minutes: a smoke run)

Same backbone, data, bins and budget for every model, with the shipped configs:
1. eSEN with the categorical energy head, one model per seed; after training,
   ``fit-uncertainty`` on the training split (one pass) and calibration (temperature and
   epistemic scale) on the validation split, as a user runs them;
2. eSEN with fairchem's scalar head, one model per seed;
3. deep ensembles of ``--members`` scalar models: ensemble s is scalar seeds s..s+M-1, so
   ``--seeds`` ensembles share members (seeds + members - 1 scalar models in all). An
   ensemble's ``energy_uncertainty`` is the members' standard deviation times a factor
   fitted on the validation split (the same Gaussian-likelihood calibration the single
   model gets), its ``ood_score`` the standard deviation per atom.

Data (``make-dataset``'s generator): ``--n-systems`` in-distribution systems split by
system into train/val/test, and out-of-distribution splits that each change one thing
(``data.OOD_SPLITS``): unseen adsorbates (N2, O2, CN, COH: seen elements), an unseen metal
(Al, an element absent from training), a stepped facet (fcc211), hotter rattles (3x, the
rattled frames only). ``--data DIR`` takes a dataset made beforehand instead, e.g. the
realistic one (``make-dataset --labeller sevennet:7net-0 --systems N --ood-systems M --out
DIR``: OC20-like systems labelled by SevenNet-0, whose OOD splits are unseen adsorbates,
unseen elements, high-index facets and hot rattles); its labelling is cached in DIR.

Each model runs as its own task (a child process of this script, one torch thread each),
``--workers`` at a time; a task whose results are already in ``--out`` is reused (an
interrupted run resumes). Tables (mean +- standard deviation over seeds) go to
``results.md`` and everything to ``results.json``; a per-method table compares every
epistemic method of the categorical models, each calibrated on validation data.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pickle
import platform
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from fairchem_categorical.predictions import StructurePrediction, as_columns  # noqa: E402

CONFIGS = REPO / "configs" / "fairchem2"
CATEGORICAL, SCALAR = "esen_categorical_conserving.yaml", "esen_scalar_conserving.yaml"
# The benchmark's backbone: small enough that a dozen trainings fit a CPU budget.
BACKBONE = [
    "backbone.sphere_channels=16", "backbone.hidden_channels=16", "backbone.edge_channels=16",
    "backbone.lmax=1", "backbone.mmax=1", "backbone.num_distance_basis=32",
]
SPLITS = {"train": 0.55, "val": 0.15, "test": 0.30}
OOD = ("adsorbates", "metal", "facet", "hot")
EVAL = ("val", "test", *OOD)


def _say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# -- one task: train one model, fit its uncertainty, predict every split ----------------------

def members_of(kind: str) -> int:
    """``categorical`` -> 1 output layer; ``categorical_k4`` -> a shallow ensemble of 4."""
    return int(kind.rsplit("_k", 1)[1]) if "_k" in kind else 1


def run_task(out: Path, kind: str, seed: int, epochs: int) -> None:
    """Child process: train, (categorical) fit-uncertainty + calibrate, predict; pickle it."""
    import torch

    from fairchem_categorical.app.jobs import fit_uncertainty, train
    from fairchem_categorical.data import read_frames
    from fairchem_categorical.fairchem2.predict import load_unit, predict_unit

    torch.set_num_threads(1)
    data = json.loads((out / "splits.json").read_text())
    tag = f"{kind}_seed{seed}"
    t = time.time()
    categorical = kind.startswith("categorical")
    shallow = [f"+heads.energy.num_members={members_of(kind)}"] if "_k" in kind else []
    ckpt = train(CONFIGS / (CATEGORICAL if categorical else SCALAR), data["train"],
                 data["val"], bins=out / "bins.yaml", max_epochs=epochs, seed=seed,
                 run_dir=out / "runs" / tag, overrides=BACKBONE + shallow)
    record: dict = {"kind": kind, "seed": seed, "train_seconds": time.time() - t,
                    "checkpoint": str(ckpt)}
    frames = {name: read_frames([data[name]]) for name in EVAL}
    if categorical:
        t = time.time()
        fitted = out / "runs" / tag / "fitted.pt"
        record["calibration"] = fit_uncertainty(ckpt, [data["train"]], [data["val"]], fitted)
        record["fit_seconds"] = time.time() - t
        record["checkpoint"] = str(fitted)
    unit = load_unit(record["checkpoint"])
    record["predictions"] = {name: predict_unit(unit, frames[name]) for name in EVAL}
    with (out / "tasks" / f"{tag}.pkl").open("wb") as fh:
        pickle.dump(record, fh)


# -- scoring ----------------------------------------------------------------------------------

def _columns(preds: list[StructurePrediction]) -> tuple[dict, dict]:
    return as_columns(preds)


def ensemble_predictions(members: list[list[StructurePrediction]], factor: float
                         ) -> list[StructurePrediction]:
    """The members' mean; energy_uncertainty = factor x their std; ood_score = std / natoms."""
    from fairchem_categorical.ensemble import combine

    out = combine(members)
    for p in out:
        p.energy_uncertainty = factor * p.energy_std
        p.ood_score = p.energy_std / p.natoms
    return out


def ensemble_factor(val: list[StructurePrediction]) -> float:
    """The std multiplier maximising the Gaussian likelihood on validation: sqrt(mean z^2)."""
    z = np.array([(p.energy - p.energy_target) / p.energy_std for p in val])
    return float(np.sqrt(np.mean(z**2)))


def score(preds: dict[str, list[StructurePrediction]]) -> dict[str, float]:
    """Test-set metrics, and per OOD split its AUROCs against the test set."""
    from fairchem_categorical.report.metrics import evaluate_predictions

    cols, arrays = _columns(preds["test"])
    out = evaluate_predictions(cols, arrays)
    for split in OOD:
        ood_cols, _ = _columns(preds[split])
        m = evaluate_predictions(cols, arrays, ood_cols)
        err = np.abs(ood_cols["energy"] - ood_cols["energy_target"]) / ood_cols["natoms"]
        out[f"mae_per_atom_{split}"] = float(err.mean())
        for key in ("auroc_ood_score", "auroc_energy_uncertainty",
                    "auroc_energy_uncertainty_per_atom", "auroc_energy_std_per_atom"):
            out[f"{key}_{split}"] = m[key]
    return out


def recalibrated_scores(preds: dict[str, list[StructurePrediction]]) -> dict[str, float]:
    """Coverage and miscalibration of the predictive distribution after an isotonic
    recalibration of its CDF fitted on the validation split (Kuleshov et al. 2018)."""
    import torch

    from fairchem_categorical.predictions import predictive_from_files
    from fairchem_categorical.predictive import Recalibration
    from fairchem_categorical.report.metrics import coverage_curve, miscalibration_area

    val, test = (predictive_from_files(*_columns(preds[k])) for k in ("val", "test"))
    if val is None:
        return {}
    y_val = torch.tensor([p.energy_target for p in preds["val"]], dtype=torch.float64)
    test.recalibration = Recalibration.fit(val.raw_cdf(y_val).numpy())
    y = np.array([p.energy_target for p in preds["test"]])

    def interval(c: float) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = test.interval(c)
        return lo.numpy(), hi.numpy()

    levels, observed = coverage_curve(interval, y)
    lo, hi = interval(0.9)
    return {"miscalibration_area_recalibrated": miscalibration_area(levels, observed),
            "energy_coverage90_recalibrated": float(np.mean((y >= lo) & (y <= hi)))}


def method_scores(preds: dict[str, list[StructurePrediction]]) -> dict[str, dict[str, float]]:
    """Every epistemic method of a categorical model, its scale alpha fitted on val (T held)."""
    from fairchem_categorical.calibration import fit_predictive, retemper
    from fairchem_categorical.epistemic import METHODS
    from fairchem_categorical.report.metrics import auroc, spearman

    val, test = preds["val"], preds["test"]
    out: dict[str, dict[str, float]] = {}
    natoms = np.array([p.natoms for p in test], float)
    err = np.abs(np.array([p.energy - p.energy_target for p in test])) / natoms
    for m in METHODS:
        fit = fit_predictive(np.stack([p.energy_probs for p in val]),
                             np.stack([p.energy_bin_centers for p in val]),
                             [p.energy_target for p in val],
                             [p.extra[f"epistemic_std_{m}"] for p in val], temperature=1.0)
        centers = np.stack([p.energy_bin_centers for p in test])
        std = retemper(np.stack([p.energy_probs for p in test]), centers,
                       fit["temperature"])["energy_std"]
        width = centers[:, 1] - centers[:, 0]
        e = np.array([p.extra[f"epistemic_std_{m}"] for p in test])
        eu = np.sqrt(std**2 + (0.75 * width) ** 2 + (fit["alpha"] * e) ** 2)
        row = {"alpha": fit["alpha"], "temperature": fit["temperature"],
               "spearman_energy_uncertainty_per_atom": spearman(eu / natoms, err),
               "spearman_ood_per_atom": spearman([p.extra[f"ood_{m}"] for p in test], err)}
        u_in = [p.extra[f"ood_{m}"] for p in test]
        for split in OOD:
            row[f"auroc_{split}"] = auroc(u_in, [p.extra[f"ood_{m}"] for p in preds[split]])
        row["auroc_mean"] = float(np.mean([row[f"auroc_{s}"] for s in OOD]))
        out[m] = row
    return out


def time_inference(out: Path, checkpoints: dict[tuple[str, int], str], repeats: int = 3
                   ) -> dict[tuple[str, int], float]:
    """ms per test structure of every model, one after another in this process, best of
    ``repeats``: ratios measured side by side (the tasks themselves ran two at a time, beside
    whatever else the machine did). ``("unfitted", s)``: categorical seed s without its
    epistemic state, to isolate that term's cost."""
    from fairchem_categorical.data import read_frames
    from fairchem_categorical.fairchem2.heads import CategoricalEnergyHead
    from fairchem_categorical.fairchem2.predict import load_unit, predict_unit

    test = read_frames([json.loads((out / "splits.json").read_text())["test"]])
    units = {key: load_unit(path) for key, path in checkpoints.items()}
    for (kind, seed), path in checkpoints.items():
        if kind.startswith("categorical"):
            units[(f"unfitted {kind}", seed)] = load_unit(path)
            units[(f"unfitted {kind}", seed)].head(CategoricalEnergyHead).epistemic.load(None)
    best = dict.fromkeys(units, math.inf)
    for _ in range(repeats + 1):  # the first round warms up
        for key, unit in units.items():
            t = time.perf_counter()
            predict_unit(unit, test)
            best[key] = min(best[key], (time.perf_counter() - t) / len(test) * 1000)
    return best


def aggregate(out: Path, seeds: int, members: int) -> dict:
    """Per model and seed: metrics; then mean and std over seeds."""
    tasks = {}
    for path in sorted((out / "tasks").glob("*.pkl")):
        with path.open("rb") as fh:
            rec = pickle.load(fh)
        tasks[(rec["kind"], rec["seed"])] = rec
    shallow = sorted({members_of(k) for k, _ in tasks if k.startswith("categorical_k")})
    cat_kinds = {"categorical": "categorical",
                 **{f"categorical_k{k}": f"categorical, {k} output layers" for k in shallow}}
    per_seed: dict[str, list[dict[str, float]]] = {
        **{name: [] for name in cat_kinds.values()}, "scalar": [],
        f"ensemble of {members} scalar": []}
    methods: list[dict[str, dict[str, float]]] = []
    scalar_train = np.mean([tasks[("scalar", s)]["train_seconds"]
                            for s in range(seeds + members - 1)])
    _say("timing inference, one model after another")
    ms = time_inference(out, {key: rec["checkpoint"] for key, rec in tasks.items()})
    for s in range(seeds):
        for kind, name in cat_kinds.items():
            cat = tasks[(kind, s)]
            per_seed[name].append({
                **score(cat["predictions"]), **recalibrated_scores(cat["predictions"]),
                # against the scalar model of the same seed, trained at the same time
                "train_cost": cat["train_seconds"] / tasks[("scalar", s)]["train_seconds"],
                "inference_cost": ms[(kind, s)] / ms[("scalar", s)],
                "inference_cost_epistemic": ms[(kind, s)] / ms[(f"unfitted {kind}", s)],
                "inference_ms": ms[(kind, s)],
                "fit_cost": cat["fit_seconds"] / cat["train_seconds"],
                "train_seconds": cat["train_seconds"], "models": 1,
                "temperature": cat["calibration"].get("predictive_temperature", math.nan),
                "disagreement": cat["calibration"].get("disagreement", math.nan),
                "alpha": cat["calibration"]["alpha"]})
        methods.append(method_scores(tasks[("categorical", s)]["predictions"]))
        sc = tasks[("scalar", s)]
        per_seed["scalar"].append({**score(sc["predictions"]), "train_cost": 1.0,
                                   "inference_cost": 1.0,
            "inference_ms": ms[("scalar", s)], "train_seconds": sc["train_seconds"],
            "models": 1})
        group = [tasks[("scalar", s + i)] for i in range(members)]
        factor = ensemble_factor(ensemble_predictions(
            [g["predictions"]["val"] for g in group], 1.0))
        ens = {name: ensemble_predictions([g["predictions"][name] for g in group], factor)
               for name in EVAL}
        per_seed[f"ensemble of {members} scalar"].append({
            # its members' training times over their mean (they ran at different loads)
            **score(ens), "train_cost": sum(g["train_seconds"] for g in group) / scalar_train,
            "inference_cost": sum(ms[("scalar", s + i)] for i in range(members))
            / ms[("scalar", s)],
            "inference_ms": sum(ms[("scalar", s + i)] for i in range(members)),
            "train_seconds": sum(g["train_seconds"] for g in group), "models": members,
            "std_factor": factor})
    summary = {name: _mean_std(rows) for name, rows in per_seed.items()}
    method_summary = {m: _mean_std([seed[m] for seed in methods]) for m in methods[0]}
    return {"models": summary, "methods": method_summary, "per_seed": per_seed,
            "methods_per_seed": methods}


def _mean_std(rows: list[dict[str, float]]) -> dict[str, tuple[float, float]]:
    keys = [k for k in rows[0] if isinstance(rows[0][k], (int, float))]
    return {k: (float(np.nanmean([r[k] for r in rows])),
                float(np.nanstd([r[k] for r in rows], ddof=1)) if len(rows) > 1 else math.nan)
            for k in keys}


# -- tables -------------------------------------------------------------------------------------

ROWS = [
    ("energy MAE (eV/atom), test", "energy_mae_per_atom", "{:.4f}"),
    ("force MAE (eV/A), test", "forces_mae", "{:.3f}"),
    ("Spearman per atom: energy_uncertainty (ensemble: std)",
     "spearman_energy_uncertainty_per_atom", "{:.3f}"),
    ("Spearman per atom: energy_std (histogram only)", "spearman_energy_std_per_atom", "{:.3f}"),
    ("Spearman per atom: ood_score", "spearman_ood_score_per_atom", "{:.3f}"),
    ("Spearman per atom: members' disagreement", "spearman_energy_disagreement_per_atom",
     "{:.3f}"),
    ("Spearman per atom: natoms (trivial baseline)", "spearman_natoms_per_atom", "{:.3f}"),
    ("Spearman per structure: energy_uncertainty", "spearman_energy_uncertainty", "{:.3f}"),
    ("Spearman per structure: natoms (trivial baseline)", "spearman_natoms", "{:.3f}"),
    ("rejection AUC ratio per atom: energy_uncertainty",
     "rejection_auc_ratio_energy_uncertainty_per_atom", "{:.3f}"),
    ("rejection AUC ratio per structure: energy_uncertainty",
     "rejection_auc_ratio_energy_uncertainty", "{:.3f}"),
    *[(f"AUROC {s}: ood_score", f"auroc_ood_score_{s}", "{:.3f}") for s in OOD],
    *[(f"AUROC {s}: energy_uncertainty per atom", f"auroc_energy_uncertainty_per_atom_{s}",
       "{:.3f}") for s in OOD],
    *[(f"AUROC {s}: energy_std per atom (histogram only)", f"auroc_energy_std_per_atom_{s}",
       "{:.3f}") for s in OOD],
    *[(f"energy MAE (eV/atom), {s}", f"mae_per_atom_{s}", "{:.4f}") for s in OOD],
    ("NLL (nats, energy in eV), energy_uncertainty", "energy_nll_uncertainty", "{:.3f}"),
    ("CRPS (eV), predictive distribution", "energy_crps_uncertainty", "{:.4f}"),
    ("miscalibration area, energy_uncertainty", "miscalibration_area_uncertainty", "{:.3f}"),
    ("90% interval coverage, energy_uncertainty", "energy_coverage90_uncertainty", "{:.3f}"),
    ("miscalibration area, + isotonic recalibration on val",
     "miscalibration_area_recalibrated", "{:.3f}"),
    ("90% interval coverage, + isotonic recalibration on val",
     "energy_coverage90_recalibrated", "{:.3f}"),
    ("predictive temperature (fitted on val)", "temperature", "{:.3g}"),
    ("disagreement weight gamma (fitted on val)", "disagreement", "{:.3g}"),
    ("epistemic scale alpha (fitted on val)", "alpha", "{:.3g}"),
    ("ENCE, energy_uncertainty", "ence_energy_uncertainty", "{:.3f}"),
    ("NLL of energy_std alone (histogram; ensemble: raw member std)", "energy_nll", "{:.3f}"),
    ("models trained", "models", "{:.0f}"),
    ("training cost (x the scalar model trained beside it)", "train_cost", "{:.2f}"),
    ("training time (s; two trainings at a time)", "train_seconds", "{:.0f}"),
    ("inference cost (x the scalar model of the same seed)", "inference_cost", "{:.3f}"),
    ("inference time (ms/structure, one model at a time)", "inference_ms", "{:.1f}"),
    ("fit-uncertainty + calibrate (x its training)", "fit_cost", "{:.3f}"),
    ("inference with / without the epistemic term", "inference_cost_epistemic", "{:.3f}"),
]
METHOD_ROWS = [
    ("Spearman per atom: energy_uncertainty", "spearman_energy_uncertainty_per_atom", "{:.3f}"),
    ("Spearman per atom: the method's score", "spearman_ood_per_atom", "{:.3f}"),
    *[(f"AUROC {s}", f"auroc_{s}", "{:.3f}") for s in OOD],
    ("AUROC, mean of the splits", "auroc_mean", "{:.3f}"),
    ("alpha (fitted on val)", "alpha", "{:.3g}"),
]


def _cell(stat: tuple[float, float] | None, fmt: str) -> str:
    if stat is None or stat[0] != stat[0]:
        return "n/a"
    mean, std = stat
    return fmt.format(mean) + ("" if std != std else " ± " + fmt.format(std))


def table(summary: dict[str, dict[str, tuple[float, float]]],
          rows: list[tuple[str, str, str]]) -> str:
    names = list(summary)
    lines = ["| metric | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for label, key, fmt in rows:
        lines.append(f"| {label} | " + " | ".join(_cell(summary[n].get(key), fmt)
                                                   for n in names) + " |")
    return "\n".join(lines)


# -- main -------------------------------------------------------------------------------------

#: The folders of a given dataset's OOD splits (``--data``), by this benchmark's names: the
#: embedded set's names, or the realistic set's (``realistic.REALISTIC_OOD_SPLITS``).
DATA_OOD = {"adsorbates": ("adsorbates",), "metal": ("metal", "elements"),
            "facet": ("facet", "facets"), "hot": ("hot",)}


def given_data(root: Path) -> dict[str, Path]:
    """The splits of a dataset made by ``make-dataset --ood-systems``: root/{train,val,test}
    and root/ood/<split>, named as this benchmark names them."""
    data = {name: root / name for name in SPLITS}
    for name, folders in DATA_OOD.items():
        found = [root / "ood" / f for f in folders if (root / "ood" / f).is_dir()]
        if not found:
            raise SystemExit(f"--data {root}: no ood/{' or ood/'.join(folders)} folder "
                             "(make it with make-dataset --ood-systems N)")
        data[name] = found[0]
    missing = [str(p) for p in data.values() if not p.is_dir()]
    if missing:
        raise SystemExit(f"--data {root}: missing {', '.join(missing)}")
    return data


def prepare(out: Path, n_systems: int, ood_systems: int, given: Path | None = None) -> None:
    from fairchem_categorical.bins import fit_bins_files, write_bins
    from fairchem_categorical.data import make_dataset, make_ood_datasets

    if given is not None:
        data = given_data(given)
    else:
        data = make_dataset(out / "data", n_systems=n_systems, seed=0, splits=SPLITS,
                            overwrite=True)
        data.update(make_ood_datasets(out / "ood", n_systems=ood_systems, overwrite=True))
    write_bins(fit_bins_files([data["train"]]), out / "bins.yaml", [data["train"]])
    (out / "splits.json").write_text(json.dumps({k: str(v) for k, v in data.items()}))


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


def run(out: Path, epochs: int, seeds: int, members: int, n_systems: int, ood_systems: int,
        workers: int, given: Path | None = None, shallow: tuple[int, ...] = ()) -> dict:
    from fairchem_categorical.data import read_frames

    t0, load_start = time.time(), os.getloadavg()
    out.mkdir(parents=True, exist_ok=True)
    (out / "tasks").mkdir(exist_ok=True)
    _say(f"data: {given}" if given else
         f"data: {n_systems} systems ({SPLITS}), OOD splits of {ood_systems} systems each")
    prepare(out, n_systems, ood_systems, given)
    splits = json.loads((out / "splits.json").read_text())
    sizes = {k: len(read_frames([v])) for k, v in splits.items()}
    _say(f"structures per split: {sizes}")
    # categorical and scalar seed s side by side, so their cost ratio shares one load
    tasks = [t for s in range(seeds) for t in (("categorical", s), ("scalar", s))] + [
        (f"categorical_k{k}", s) for s in range(seeds) for k in shallow] + [
        ("scalar", s) for s in range(seeds, seeds + members - 1)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}

    def launch(task: tuple[str, int]) -> float:
        kind, seed = task
        log = out / "tasks" / f"{kind}_seed{seed}.log"
        if (out / "tasks" / f"{kind}_seed{seed}.pkl").is_file():  # a resumed run
            _say(f"reuse {kind} seed {seed} (its results are in {out / 'tasks'})")
            return 0.0
        t = time.time()
        _say(f"start {kind} seed {seed} (log {log})")
        with log.open("w") as fh:
            code = subprocess.call([sys.executable, __file__, "task", "--out", str(out),
                                    "--kind", kind, "--seed", str(seed), "--epochs",
                                    str(epochs)], stdout=fh, stderr=subprocess.STDOUT, env=env)
        if code != 0:
            raise RuntimeError(f"{kind} seed {seed} failed (exit {code}); see {log}")
        _say(f"done {kind} seed {seed} in {time.time() - t:.0f} s")
        return time.time() - t

    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(launch, tasks))
    results = aggregate(out, seeds, members)
    results["_meta"] = {"epochs": epochs, "seeds": seeds, "members": members,
                        "n_systems": None if given else n_systems,
                        "ood_systems": None if given else ood_systems, "workers": workers,
                        "data": str(given or "embedded (EMT)"),
                        "structures": sizes, "seconds": time.time() - t0,
                        "machine": f"{_cpu()}, {os.cpu_count()} cores, {platform.machine()}",
                        "date": time.strftime("%Y-%m-%d %H:%M"),
                        "load_average_at_start": load_start,
                        "load_average_at_end": os.getloadavg()}
    return results


def main() -> None:
    import torch

    torch.set_num_threads(1)
    if len(sys.argv) > 1 and sys.argv[1] == "task":
        ap = argparse.ArgumentParser()
        ap.add_argument("task")
        ap.add_argument("--out", type=Path, required=True)
        ap.add_argument("--kind", required=True,
                        help="categorical, categorical_k<K> (K output layers) or scalar")
        ap.add_argument("--seed", type=int, required=True)
        ap.add_argument("--epochs", type=int, required=True)
        a = ap.parse_args()
        run_task(a.out, a.kind, a.seed, a.epochs)
        return
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "out")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--members", type=int, default=5)
    ap.add_argument("--n-systems", type=int, default=80)
    ap.add_argument("--ood-systems", type=int, default=10)
    ap.add_argument("--workers", type=int, default=2, help="models trained at once")
    ap.add_argument("--data", type=Path,
                    help="a dataset made by make-dataset --ood-systems N (e.g. the realistic "
                         "one, --labeller sevennet:7net-0) instead of generating the embedded "
                         "set; --n-systems and --ood-systems are then ignored")
    ap.add_argument("--shallow", type=int, nargs="*", default=[4],
                    help="also train categorical shallow ensembles of these numbers of "
                         "output layers (default 4; none: --shallow)")
    ap.add_argument("--quick", action="store_true",
                    help="a smoke run: 2 seeds, 3 members, 20 systems, 3 epochs")
    ap.add_argument("--aggregate-only", action="store_true",
                    help="re-score the saved tasks of a finished run in --out")
    a = ap.parse_args()
    if a.quick:
        a.epochs, a.seeds, a.members, a.n_systems, a.ood_systems = 3, 2, 3, 20, 3
    if a.aggregate_only:
        results = aggregate(a.out, a.seeds, a.members)
        results["_meta"] = json.loads((a.out / "results.json").read_text()).get("_meta", {})
    else:
        results = run(a.out, a.epochs, a.seeds, a.members, a.n_systems, a.ood_systems,
                      a.workers, a.data, tuple(k for k in a.shallow if k > 1))
    text = (table(results["models"], ROWS) + "\n\nEpistemic methods of the categorical model "
            "(each with its own scale fitted on val, the temperature held):\n\n"
            + table(results["methods"], METHOD_ROWS) + f"\n\n{results['_meta']}\n")
    (a.out / "results.json").write_text(json.dumps(results, indent=1, default=str))
    (a.out / "results.md").write_text(text)
    print(text, flush=True)


if __name__ == "__main__":
    main()
