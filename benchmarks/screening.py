"""AdsorbML-style screening benchmark: how many reference calls P(lowest) saves at equal success.

    .venv/bin/python benchmarks/screening.py --quick --out benchmarks/results/screening_emt
    .venv/bin/python benchmarks/screening.py --labeller sevennet:7net-0 --out DIR   # realistic

N systems (slab + adsorbate) that the model never saw: systems ``--train-systems`` onwards
of the training data's own generator (the embedded EMT one, or the realistic one with
``--labeller sevennet:7net-0``), the slab being the system's atoms without the adsorbate.
Each gets M placements by fairchem-data-oc (half ``heuristic``, half ``random``), all
relaxed by the model (``--checkpoint``, or a tiny categorical eSEN trained here on systems
0..``--train-systems``-1 and fitted for uncertainty as ``active_learning.py`` does). The
reference relaxes every initial placement (its lowest valid energy is the reference
minimum), and, for each configuration the model relaxed, gives a single point at the model's
geometry (SP) and a relaxation from it (RX). Anomalies (fairchem's AdsorbML checks) are
left out: the model's, from what any strategy may pick; the reference's, from the minimum
and the successes.

Strategies and their success rates against mean reference calls per system are those of
``fairchem_categorical.report.adsorbml``. P(lowest) comes from one function of a screened
system (``--p-lowest module:function``; default: ``independent_p_lowest``, the
configurations' histograms taken as independent), so a joint predictive distribution is
scored by passing its function, and ``--rescore`` re-scores a finished run without
relaxing again. Writes ``screening.md``, ``.json`` and ``.png`` (``--stem``) to ``--out``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import pickle
import platform
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from ase import Atoms

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.active_learning import CONFIGS, TINY, frames  # noqa: E402
from fairchem_categorical import screening  # noqa: E402
from fairchem_categorical.report import adsorbml  # noqa: E402
from fairchem_categorical.report.tables import rows_table  # noqa: E402

PLowest = Callable[[screening.SystemResult], np.ndarray]
System = tuple[str, Atoms, screening.AdsorbateSpec]


def independent_p_lowest(result: screening.SystemResult) -> np.ndarray:
    """P(lowest) over a system's configurations from each one's own predicted distribution,
    taken as independent (``screening.probability_lowest``); 0 for anomalous ones."""
    p = np.zeros(len(result.configurations))
    valid = [i for i, c in enumerate(result.configurations) if not c.anomalies]
    if valid:
        p[valid] = screening.probability_lowest([
            screening.EnergyDistribution.from_results(result.configurations[i].relaxed.results)
            for i in valid])
    return p


def load_p_lowest(spec: str | None) -> PLowest:
    """``module:function`` (a P(lowest) of a ``SystemResult``), or the default."""
    if not spec:
        return independent_p_lowest
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


# -- systems and model --------------------------------------------------------------------------
def screening_systems(first: int, n: int, labeller: str, cache: Path) -> list[System]:
    """Systems ``first..first+n-1`` of the training data's generator: (name, clean slab,
    adsorbate); the slab is the system without its tag-2 atoms."""
    from fairchem_categorical.ocdata import adsorbate_database, fix_subsurface

    database = adsorbate_database()
    out, seen = [], set()
    for atoms in frames(first, n, 1, labeller=labeller, cache=cache):
        sid = atoms.info["sid"]
        if sid in seen:
            continue
        seen.add(sid)
        slab = fix_subsurface(atoms[atoms.get_tags() != 2])
        slab.calc = None
        ads = screening.adsorbate_spec(str(atoms.info["adsorbate"]), database)
        out.append((f"{sid}_{atoms.info['metal']}_{atoms.info['facet']}+{ads.name}", slab, ads))
    return out


def train_model(work: Path, labeller: str, systems: int, epochs: int, seed: int,
                overrides: Sequence[str]) -> Path:
    """A tiny categorical eSEN on systems 0..systems-1 (6 frames each), validated and its
    uncertainty calibrated on another stream's systems, as ``active_learning.py`` does."""
    from fairchem_categorical.app import jobs
    from fairchem_categorical.app.active import write_dataset
    from fairchem_categorical.bins import fit_bins_files, write_bins

    data = dict(labeller=labeller, cache=work / "labelled")
    train = write_dataset(frames(0, systems, 6, **data), work / "train")
    val = write_dataset(frames(0, max(4, systems // 4), 4, seed=1000, **data), work / "val")
    bins = write_bins(fit_bins_files([work / "train" / "frames.extxyz"], num_bins=64,
                                     margin=1.0), work / "bins.yaml",
                      [work / "train" / "frames.extxyz"])
    return jobs.train(CONFIGS / "esen_categorical_conserving.yaml", str(train), str(val), bins,
                      epochs, seed, work / "runs", [*TINY, *overrides], fit=True)


def mixed_placer(place: screening.Placer) -> screening.Placer:
    """fairchem-data-oc's placer giving half ``heuristic`` and half ``random`` placements,
    as AdsorbML's OC20-Dense set was made. Heuristic mode places on every site it finds,
    in a fixed order; a seeded draw of them is kept, not the first few."""
    def both(slab, adsorbate, num, mode, seed):  # noqa: ANN001, ANN202 (a Placer)
        sites = place(slab, adsorbate, 10_000, "heuristic", seed)
        keep = np.random.default_rng(seed).permutation(len(sites))[:num - num // 2]
        out = [sites[i] for i in sorted(keep)]
        return out + (place(slab, adsorbate, num // 2, "random", seed + 1) if num > 1 else [])
    return both


# -- one system ---------------------------------------------------------------------------------
def reference_energies(result: screening.SystemResult, calculator, anomalies, fmax: float,
                       steps: int) -> dict:
    """The reference's adsorption energies (its relaxed slab, OC20 gas references): every
    initial placement relaxed, and every model-valid configuration's SP and RX; NaN where
    the reference's relaxation is anomalous (or the model's, for SP and RX)."""
    slab = screening.relax(result.slab.atoms, calculator, fmax, steps)
    offset = -float(slab.results["energy"]) - result.gas_reference
    initial, sp, rx, calls = [], [], [], 0
    for c in result.configurations:
        r = screening.relax(c.initial, calculator, fmax, steps)
        calls += r.steps + 1
        bad = anomalies(c.initial, r.atoms, slab.atoms)
        initial.append(math.nan if bad else float(r.results["energy"]) + offset)
        if c.anomalies:
            sp.append(math.nan)
            rx.append(math.nan)
            continue
        atoms = c.relaxed.atoms.copy()
        atoms.calc = calculator
        sp.append(float(atoms.get_potential_energy()) + offset)
        r = screening.relax(c.relaxed.atoms, calculator, fmax, steps)
        calls += r.steps + 2
        rx.append(math.nan if anomalies(c.initial, r.atoms, slab.atoms)
                  else float(r.results["energy"]) + offset)
    return {"initial": initial, "sp": sp, "rx": rx, "force_calls": calls}


def outcome(result: screening.SystemResult, reference: dict, p_lowest: PLowest
            ) -> adsorbml.SystemOutcome:
    """The numbers AdsorbML's measure needs, with P(lowest) from ``p_lowest``."""
    predicted = [math.nan if c.anomalies else c.adsorption_energy
                 for c in result.configurations]
    initial = np.array(reference["initial"], float)
    return adsorbml.SystemOutcome(
        result.system, predicted, p_lowest(result),
        {"sp": reference["sp"], "rx": reference["rx"]},
        float(np.nanmin(initial)) if np.isfinite(initial).any() else math.nan)


# -- report --------------------------------------------------------------------------------------
def headline(rows: list[dict], variant: str, target_rate: float = 0.85) -> dict:
    """Calls each family needs to match AdsorbML top-k's success at the first k reaching
    ``target_rate`` (or its best k if none does)."""
    top = sorted((r for r in rows if r["variant"] == variant and r["strategy"] == "top-k"),
                 key=lambda r: r["parameter"])
    reach = [r for r in top if r["success"] >= target_rate]
    ref = reach[0] if reach else max(top, key=lambda r: r["success"])
    if ref["success"] <= 0:  # nothing to match
        return {"variant": variant, "top_k": "-", "success": 0.0, "top_k_calls": math.nan,
                "p_lowest coverage": math.nan, "p_lowest budget": math.nan,
                "random": math.nan}
    out = {"variant": variant, "top_k": ref["parameter"], "success": ref["success"],
           "top_k_calls": ref["calls"]}
    for family in ("p_lowest coverage", "p_lowest budget", "random"):
        fam = [r for r in rows if r["variant"] == variant and r["strategy"] == family]
        need = adsorbml.calls_to_success([r["calls"] for r in fam],
                                         [r["success"] for r in fam], ref["success"])
        out[family] = need
    return out


def plot(rows: list[dict], reliab: dict[str, list[dict]], out_png: Path) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 3.6))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 3)
    for ax, variant in zip(axes[:2], adsorbml.VARIANTS, strict=True):
        for i, family in enumerate(("top-k", "p_lowest coverage", "p_lowest budget",
                                    "random")):
            fam = sorted((r for r in rows if r["variant"] == variant
                          and r["strategy"] == family), key=lambda r: r["calls"])
            ax.plot([r["calls"] for r in fam], [r["success"] for r in fam], "o-",
                    color=f"C{i}", label=family, alpha=0.85)
        ax.set_xlabel("mean reference calls per system")
        ax.set_ylabel(f"success rate ({variant.upper()})")
        ax.set_ylim(-0.03, 1.03)
        what = "single point" if variant == "sp" else "relaxation"
        ax.set_title(f"ML relaxation + reference {what}", fontsize=9)
        ax.legend(fontsize=7)
    ax = axes[2]
    for i, (variant, bins) in enumerate(reliab.items()):
        ax.plot([b["predicted"] for b in bins], [b["observed"] for b in bins], "o-",
                color=f"C{i}", label=f"{variant.upper()} reference")
        for b in bins:  # how many configurations each point stands for
            ax.annotate(str(b["count"]), (b["predicted"], b["observed"]), fontsize=6,
                        color=f"C{i}", xytext=(3, 3 - 9 * i), textcoords="offset points")
    ax.plot([0, 1], [0, 1], "k:", lw=1)
    ax.set_xlabel("predicted P(lowest) (bin mean)")
    ax.set_ylabel("observed frequency of the lowest")
    ax.set_title("reliability of p_lowest (numbers: configurations)", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=110)
    return out_png


def _fmt(v: float, fmt: str = "{:.2f}") -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else fmt.format(v)


def report(outcomes: list[adsorbml.SystemOutcome], meta: dict, out: Path,
           stem: str = "screening") -> str:
    rows = [r for v in adsorbml.VARIANTS for r in adsorbml.score(outcomes, v)]
    reliab = {v: adsorbml.reliability(outcomes, v) for v in adsorbml.VARIANTS}
    heads = [headline(rows, v) for v in adsorbml.VARIANTS]
    by = {(r["strategy"], r["parameter"], r["variant"]): r for r in rows}
    keys = sorted({(r["strategy"], r["parameter"]) for r in rows},
                  key=lambda k: (["top-k", "p_lowest coverage", "p_lowest budget",
                                  "random"].index(k[0]), k[1]))
    table = rows_table(
        ["strategy", "parameter", "calls / system", "success SP", "success RX"],
        [[s, p, _fmt(by[s, p, "sp"]["calls"]), _fmt(by[s, p, "sp"]["success"]),
          _fmt(by[s, p, "rx"]["success"])] for s, p in keys])
    head = rows_table(
        ["variant", "AdsorbML top-k", "its success", "its calls", "p_lowest coverage needs",
         "p_lowest budget needs", "random needs"],
        [[h["variant"].upper(), h["top_k"], _fmt(h["success"]), _fmt(h["top_k_calls"]),
          _fmt(h["p_lowest coverage"]), _fmt(h["p_lowest budget"]), _fmt(h["random"])]
         for h in heads])
    rel = rows_table(
        ["variant", "P(lowest) bin", "configurations", "mean predicted", "observed"],
        [[v.upper(), f"{b['low']:.1f}-{b['high']:.1f}", b["count"], _fmt(b["predicted"]),
          _fmt(b["observed"])] for v, bins in reliab.items() for b in bins])
    scored = adsorbml.scored(outcomes)
    text = (f"# Screening benchmark ({meta['labeller']})\n\n"
            f"{meta['when']}, {meta['machine']}; `{meta['command']}`\n\n"
            f"{len(outcomes)} systems ({len(scored)} with a valid reference minimum), "
            f"{meta['placements']} placements each (heuristic + random), model "
            f"`{meta['model']}`, P(lowest) from `{meta['p_lowest']}`; model-anomalous "
            f"configurations {meta['model_anomalies']}, reference-anomalous relaxations of the "
            f"initial placements {meta['reference_anomalies']}. Success: best reference "
            f"energy among the picks within {adsorbml.TOLERANCE} eV of the reference minimum "
            f"or lower (AdsorbML); random is the exact expectation over draws. Adsorption energies "
            "are referenced to OC20's DFT gas-phase atoms, whatever the labeller: only "
            "differences within a system matter here.\n\n"
            f"{table}\n\nReference calls to match AdsorbML top-k's success (the first k "
            "reaching 85%, else its best), interpolated along each family's curve:\n\n"
            f"{head}\n\nReliability of p_lowest (event: the configuration has the lowest "
            f"reference energy of its system):\n\n{rel}\n\n"
            f"Timings: {meta['timings']}\n")
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.md").write_text(text)
    (out / f"{stem}.json").write_text(json.dumps(
        {"meta": meta, "rows": rows, "headline": heads, "reliability": reliab,
         "systems": [o.to_json() for o in outcomes]}, indent=1))
    plot(rows, reliab, out / f"{stem}.png")
    return text


# -- run -----------------------------------------------------------------------------------------
def run_systems(systems: list[System], tools: screening.ScreeningTools, labeller: str,
                placements: int, fmax: float, steps: int, seed: int, say=print) -> list:
    """(model's SystemResult, reference energies) per system."""
    from fairchem_categorical.data.labellers import labeller as named

    reference = named(labeller)()
    done = []
    for name, slab, ads in systems:
        t0 = time.time()
        result = screening.screen_system(name, slab, ads, tools, num_placements=placements,
                                         fmax=fmax, steps=steps, seed=seed)
        t1 = time.time()
        ref = reference_energies(result, reference, tools.anomalies, fmax, steps)
        ref["model_seconds"], ref["reference_seconds"] = t1 - t0, time.time() - t1
        say(f"{name}: {len(result.configurations)} configurations, model {t1 - t0:.0f} s, "
            f"reference {ref['reference_seconds']:.0f} s")
        done.append((result, ref))
    return done


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "out" / "screening_bench")
    p.add_argument("--stem", default="screening", help="output file names: STEM.md/json/png")
    p.add_argument("--work", type=Path, default=None, help="scratch (default: OUT/work)")
    p.add_argument("--labeller", default="emt", help="emt (default) or sevennet:7net-0")
    p.add_argument("--checkpoint", type=Path, help="a trained categorical checkpoint "
                   "(default: train a tiny one on the generator's first --train-systems)")
    p.add_argument("--systems", type=int, default=12)
    p.add_argument("--placements", type=int, default=8)
    p.add_argument("--train-systems", type=int, default=32)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--override", nargs="*", default=["forces_coefficient=50"],
                   help="extra fairchem overrides for the training (relaxations need forces)")
    p.add_argument("--fmax", type=float, default=0.05)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--p-lowest", default=None,
                   help="module:function giving P(lowest) of a screening.SystemResult")
    p.add_argument("--quick", action="store_true",
                   help="4 systems x 4 placements, 16 training systems, 10 epochs, 100 steps")
    p.add_argument("--rescore", action="store_true",
                   help="no relaxations: re-score WORK/screened.pkl (e.g. another --p-lowest)")
    args = p.parse_args()
    if args.quick:
        args.systems, args.placements, args.train_systems = 4, 4, 16
        args.epochs, args.steps = 10, 100
    work = args.work or args.out / "work"
    work.mkdir(parents=True, exist_ok=True)
    p_lowest = load_p_lowest(args.p_lowest)
    start = time.time()
    pkl = work / "screened.pkl"
    if args.rescore:
        with pkl.open("rb") as fh:
            saved = pickle.load(fh)
        done, meta = saved["done"], saved["meta"]
    else:
        ckpt, train_seconds = args.checkpoint, 0.0
        if ckpt is None:
            ckpt = train_model(work, args.labeller, args.train_systems, args.epochs, args.seed,
                               args.override)
            train_seconds = time.time() - start
        from fairchem_categorical.app import lines

        tools = lines.current("the screening benchmark").adapter("screening").tools(ckpt)
        tools.place = mixed_placer(tools.place)
        systems = screening_systems(args.train_systems, args.systems, args.labeller,
                                    work / "labelled")
        t0 = time.time()
        done = run_systems(systems, tools, args.labeller, args.placements, args.fmax,
                           args.steps, args.seed)
        meta = {"labeller": args.labeller, "placements": args.placements,
                "model": str(ckpt) if args.checkpoint else
                f"tiny categorical eSEN, {args.train_systems} systems x 6 frames, "
                f"{args.epochs} epochs, seed {args.seed}",
                "when": time.strftime("%Y-%m-%d"),
                "machine": f"{os.cpu_count()} CPU cores ({platform.machine()}), no GPU",
                "command": " ".join(["benchmarks/screening.py", *sys.argv[1:]]),
                "timings": f"training {train_seconds:.0f} s, screening + reference "
                           f"{time.time() - t0:.0f} s (model relaxations "
                           f"{sum(r['model_seconds'] for _, r in done):.0f} s, reference "
                           f"{sum(r['reference_seconds'] for _, r in done):.0f} s)"}
        with pkl.open("wb") as fh:
            pickle.dump({"done": done, "meta": meta}, fh)
    outcomes = [outcome(result, ref, p_lowest) for result, ref in done]
    meta = {**meta, "p_lowest": args.p_lowest or "independent_p_lowest",
            "model_anomalies": sum(bool(c.anomalies) for r, _ in done
                                   for c in r.configurations),
            "reference_anomalies": sum(int(np.isnan(ref["initial"]).sum()) for _, ref in done)}
    print(report(outcomes, meta, args.out, args.stem))


if __name__ == "__main__":
    main()
