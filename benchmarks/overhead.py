"""What the categorical heads cost next to fairchem's scalar heads, side by side in one run.

    .venv/bin/python benchmarks/overhead.py --out benchmarks/out/overhead            (2.x)
    .venv-fairchem1/bin/python benchmarks/overhead.py --out benchmarks/out/overhead  (1.10)
    make benchmark-overhead                                                           (both)

The installed fairchem line decides what runs: on fairchem-core 2.x eSEN and UMA-MoE
(categorical energy head vs ``MLP_EFS_Head``, ``overhead_fairchem2.py``), on 1.10
EquiformerV2 (categorical energy + direct-force heads vs ``equiformerV2_scalar_head`` /
``equiformerV2_vector_head``) and eSEN (vs ``esen_mlp_efs_head``, ``overhead_fairchem1.py``).
Same backbone (same weights), same batch; repetitions interleaved (``timing.py``); ratios
are categorical / scalar per repetition, reported as median [quartiles] (min-max).
Writes ``fairchem{1,2}.json`` and ``fairchem{1,2}.md`` to ``--out`` and prints the tables.
Set ``OMP_NUM_THREADS=1`` (the make target does) unless threads are what you measure.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))

from timing import CLOCK, machine, markdown, set_clock  # noqa: E402

GOALS = {"train": 1.03, "infer": 1.02, "binning_share": 0.02}


def _say(msg: str) -> None:
    print(msg, flush=True)


def _suite(line: int):  # noqa: ANN202
    if line == 2:
        import overhead_fairchem2 as suite
    else:
        import overhead_fairchem1 as suite
    return suite


def _ratio(r: dict[str, float]) -> str:
    return f"{r['median']:.3f} [{r['q25']:.3f}, {r['q75']:.3f}] ({r['low']:.3f}-{r['high']:.3f})"


def _mb(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.0f}"


def tables(results: dict[str, Any], suite: Any) -> str:
    meta = results["machine"]
    parts = [f"### {results['line']}: measured {meta['date']}",
             f"Machine: {meta['host_cpu']}, {meta['cpu_count']} cores, device {meta['device']}"
             + (f" ({meta['gpu']})" if "gpu" in meta else "")
             + f", torch {meta['torch']} with {meta['torch_threads']} thread(s); times are "
             f"{'process CPU time' if meta.get('clock') == 'cpu' else 'wall time'}; load average "
             f"(1/5/15 min) {meta.get('load_average_1_5_15')} at the start, "
             f"{results.get('load_average_end')} at the end; {results['seconds']:.0f} s.",
             f"Command: `{meta['command']}`"]
    if results.get("steps"):
        mem = "peak CUDA MiB" if meta["device"].startswith("cuda") else "peak RSS MiB"
        rows = []
        for r in results["steps"]:
            rows.append([
                suite.MODEL_LABELS[r["model"]], suite.size_label(r["size"]),
                f"{r['structures']} / {r['atoms']}",
                f"{r['train_ms']['categorical']:.0f} / {r['train_ms']['scalar']:.0f}",
                _ratio(r["train_ratio"]),
                f"{r['infer_ms']['categorical']:.0f} / {r['infer_ms']['scalar']:.0f}",
                _ratio(r["infer_ratio"]),
                (f"{_mb(r['train_peak_mb']['categorical'])} / {_mb(r['train_peak_mb']['scalar'])}"
                 f"; {_mb(r['infer_peak_mb']['categorical'])} / "
                 f"{_mb(r['infer_peak_mb']['scalar'])}") if "train_peak_mb" in r else "n/a",
            ])
        reps = len(results["steps"][0]["train_s"]["scalar"])
        parts += [f"Training step and inference, categorical / scalar ({reps} interleaved "
                  f"repetitions; goal: training x{GOALS['train']}, inference "
                  f"x{GOALS['infer']}):", "",
                  markdown(["model", "size", "structures / atoms", "train ms (cat / scalar)",
                            "train ratio", "inference ms (cat / scalar)", "inference ratio",
                            f"{mem}: train; inference (cat / scalar)"], rows)]
    if results.get("item_load"):
        load = results["item_load"]
        us = load["us_per_item"]
        parts += ["", f"Dataset item load ({load['items']} items; {load['what']}; goal: "
                  f"binning within {100 * GOALS['binning_share']:.0f}% of item load time):", "",
                  markdown(["without binning (us/item)", "with binning (us/item)",
                            "with / without", "binning alone (us/item)",
                            "binning / item load"],
                           [[f"{us['plain']:.0f}", f"{us['categorical']:.0f}",
                             _ratio(load["load_ratio"]), f"{us['binner']:.1f}",
                             _ratio(load["binner_share"])]])]
    if results.get("throughput"):
        tp = results["throughput"]
        rows = [[r["batch_size"],
                 f"{r['structures_per_s']['categorical']:.1f}",
                 f"{r['structures_per_s']['scalar']:.1f}",
                 _ratio(r["categorical_vs_scalar"]),
                 f"{r['ms_per_structure']['categorical_records']:.1f}",
                 f"{r['ms_per_structure']['ensemble']:.1f}",
                 _ratio(r["ensemble_vs_categorical"])] for r in tp["rows"]]
        epistemic = ("with the epistemic term" if tp["epistemic"] else
                     "histogram only (no epistemic term in this checkpoint)")
        parts += ["", f"Batched inference through fairchem's predict unit ({tp['settings']} "
                  f"settings), {tp['structures']} structures per repetition; model: "
                  f"{tp['model']}. Structures/s: ASE Atoms -> batch -> `predict_batch` "
                  "(categorical: energy, forces and every uncertainty output) vs fairchem's "
                  "own `MLIPPredictUnit.predict` on the scalar twin. Per structure with "
                  f"records (the `predict` command's path): categorical ({epistemic}) vs "
                  f"{tp['members']} scalar models + `ensemble.combine`:", "",
                  markdown(["batch size", "categorical structures/s",
                            "scalar structures/s (fairchem's own)", "time cat / scalar",
                            "categorical ms/structure", f"ensemble of {tp['members']} "
                            "ms/structure", "ensemble / categorical"], rows)]
    if results.get("profile"):
        rows, details = [], []
        for prof in results["profile"]:
            for step, label in (("train_step", "training step"), ("infer_step", "inference")):
                p = prof[step]
                scalar_ms = p["total_self_ms"]["scalar"]
                rows.append([suite.MODEL_LABELS[prof["model"]], suite.size_label(prof["size"]),
                             label, f"{p['total_self_ms']['categorical']:.1f}",
                             f"{scalar_ms:.1f}", f"{p['extra_ms']:.2f}",
                             f"{100 * p['extra_ms'] / scalar_ms:.2f}%"])
            if prof is results["profile"][0]:
                p = prof["train_step"]
                details = [[f"`{op}`", f"{calls:+.0f}", f"{ms:.3f}"]
                           for op, calls, ms in p["extra_calls"][:10]]
                detail_label = f"{prof['model']}, {prof['size']}, training step"
        first = results["profile"][0]
        parts += ["", f"Profile (torch.profiler, {first['rounds']} rounds of {first['steps']} "
                  "steps per model, per-call minimum over the rounds): total self CPU ms per "
                  "step, and the time of the (op, input shape) "
                  "calls the categorical model makes more often than the scalar one, which "
                  "is the heads' and the losses' own work, free of the run-to-run noise in "
                  "the backbone's share:", "",
                  markdown(["model", "size", "step", "categorical ms", "scalar ms",
                            "categorical's extra calls (ms)", "share of the scalar step"],
                           rows),
                  "", f"The largest extra calls ({detail_label}):", "",
                  markdown(["op [input shapes]", "extra calls per step", "ms per step"],
                           details)]
    return "\n".join(parts) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from fairchem_categorical.app.lines import installed_line

    line = installed_line()
    if line not in (1, 2):
        raise SystemExit("the overhead benchmark needs fairchem-core (1.10 or 2.x)")
    suite = _suite(line)
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/out/overhead"))
    ap.add_argument("--work", type=Path, help="scratch folder (default: a temporary one)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--reps", type=int, default=10, help="interleaved repetitions")
    ap.add_argument("--clock", choices=["cpu", "wall"],
                    help="cpu: process CPU time (default on the CPU: robust to other jobs on "
                         "a shared machine); wall: elapsed time (default on CUDA)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--models", nargs="+", default=list(suite.MODELS),
                    choices=list(suite.MODELS))
    ap.add_argument("--sizes", nargs="+", choices=list(suite.SIZES),
                    help="backbone sizes for every model (default: per model, "
                         f"{suite.DEFAULT_SIZES})")
    ap.add_argument("--sections", nargs="+",
                    default=["steps", "load", "throughput", "profile"],
                    choices=["steps", "load", "throughput", "profile"])
    ap.add_argument("--no-memory", dest="memory", action="store_false",
                    help="skip the peak-memory measurements")
    ap.add_argument("--profile-sizes", nargs="+", default=["cpu", "paper"],
                    choices=list(suite.SIZES))
    ap.add_argument("--throughput-size", default="cpu", choices=list(suite.SIZES))
    ap.add_argument("--throughput-batch-sizes", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--structures", type=int, default=16,
                    help="structures predicted per throughput repetition")
    ap.add_argument("--members", type=int, default=5, help="scalar ensemble size")
    ap.add_argument("--data", type=Path,
                    help="a dataset folder with train/val/test (e.g. the realistic one: "
                         "make-dataset --labeller sevennet:7net-0; for the 1.10 line convert "
                         "it to pyg-lmdb) instead of the embedded EMT set")
    ap.add_argument("--checkpoint", type=Path,
                    help="a trained categorical checkpoint for the throughput section (e.g. "
                         "one with the epistemic term fitted); default: built untrained")
    args = ap.parse_args(argv)
    set_clock(args.clock or ("wall" if args.device.startswith("cuda") else "cpu"))
    meta = machine(args.device)  # the load average before the run
    meta["clock"] = CLOCK["name"]
    results = suite.run(args, _say)
    results["machine"] = meta
    results["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    args.out.mkdir(parents=True, exist_ok=True)
    name = f"fairchem{line}"
    (args.out / f"{name}.json").write_text(json.dumps(results, indent=1, default=str))
    text = tables(results, suite)
    (args.out / f"{name}.md").write_text(text)
    _say(text)
    return results


if __name__ == "__main__":
    main()
