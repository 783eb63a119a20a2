"""Peak memory and throughput of ``fit-bins`` and ``predict`` as the dataset grows
(issue 16, item 2).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/scale.py --sizes 1000 10000 100000 \
        --predict-sizes 1000 10000

Writes a synthetic ASE-LMDB per size (the embedded EMT frames, replicated row by row, so
writing needs no more memory than one row), then runs each command in a fresh process
(``--probe``: the CLI in-process, with a thread reading ``/proc/self/status`` every
20 ms) and reports its peak RSS (the kernel's ``VmHWM``) and, sampled, its peak
anonymous memory (``RssAnon``: heap, Python objects, tensors) and peak file-backed
memory (``RssFile``: mapped files, the LMDB's memory map among them). File-backed pages
are the kernel's page cache shared with the file, dropped under memory pressure; the
anonymous peak is what grows if a command holds the data. Flat anonymous memory across
sizes is what the streaming promises. ``predict`` runs the committed tiny eSEN checkpoint
(``tests/data/legacy/fairchem2``). Prints a Markdown table; ``--out`` also writes it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def write_replicated(path: Path, size: int, seed: int = 0) -> Path:
    """``size`` rows cycling over the embedded frames, written one at a time."""
    from fairchem_categorical.data import read_frames
    from fairchem_categorical.data.aselmdb import _row, lmdb_database_cls
    from fairchem_categorical.data.embedded import make_dataset

    base = make_dataset(path.parent / "base", n_systems=4, seed=seed)["train"]
    rows = [_row(a, f"frames[{i}]") for i, a in enumerate(read_frames([base]))]
    with lmdb_database_cls()(path, use_lock_file=False) as db:
        for i in range(size):
            clean, kvp, data = rows[i % len(rows)]
            db.write(clean, key_value_pairs=kvp, data=data)
    return path


CHECKPOINT = REPO / "tests" / "data" / "legacy" / "fairchem2" / "esen_categorical_conserving.pt"
#: /proc/self/status fields the probe reads (kB)
FIELDS = ("VmHWM", "RssAnon", "RssFile")


def _status() -> dict[str, int]:
    with open("/proc/self/status") as fh:
        return {k: int(v.split()[0]) for k, v in (line.split(":", 1) for line in fh)
                if k in FIELDS}


def probe(args: list[str]) -> None:
    """Run the CLI here with a sampler thread; print the peaks (MiB) as JSON, last line."""
    import threading

    from fairchem_categorical.app.cli import main as cli

    peaks = {"RssAnon": 0, "RssFile": 0}
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            now = _status()
            for k in peaks:
                peaks[k] = max(peaks[k], now[k])
            done.wait(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    t = time.perf_counter()
    rc = cli(args)
    seconds = time.perf_counter() - t
    done.set()
    sampler.join()
    final = _status()
    print(json.dumps({"rc": rc, "seconds": seconds, "rss": final["VmHWM"] / 1024,
                      "anon": max(peaks["RssAnon"], final["RssAnon"]) / 1024,
                      "file": max(peaks["RssFile"], final["RssFile"]) / 1024}))


def run_child(args: list[str]) -> dict[str, float]:
    """Seconds (the command alone, imports excluded), peak RSS and sampled peak anonymous
    and file-backed memory (MiB) of one fresh process running the CLI."""
    out = subprocess.run([sys.executable, __file__, "--probe", *args],
                         capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    if out.returncode:
        raise RuntimeError(f"{' '.join(args)} failed: {out.stderr[-2000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if result["rc"]:
        raise RuntimeError(f"{' '.join(args)} exited {result['rc']}: {out.stderr[-2000:]}")
    return result


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--probe":
        probe(sys.argv[2:])
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    ap.add_argument("--predict-sizes", type=int, nargs="*", default=[1000, 10000],
                    help="sizes (of --sizes) that predict runs on too (~10-20 ms/structure)")
    ap.add_argument("--batch-size", type=int, default=16, help="predict's batch size")
    ap.add_argument("--work", type=Path, help="scratch folder (default: a temporary one)")
    ap.add_argument("--out", type=Path, help="also write the table here")
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="scale_"))
    rows = ["| command | structures | LMDB MiB | s | structures/s | peak RSS MiB | "
            "peak RssAnon MiB | peak RssFile MiB |", "|---|---|---|---|---|---|---|---|"]
    for size in args.sizes:
        folder = work / str(size)
        folder.mkdir(parents=True, exist_ok=True)
        data = write_replicated(folder / "data.aselmdb", size)
        mib = data.stat().st_size / 2**20
        runs = {"fit-bins": ["fit-bins", str(data), "--out", str(folder / "bins.yaml")]}
        if size in args.predict_sizes:
            runs["predict"] = ["predict", "--checkpoint", str(CHECKPOINT), str(data), "--out",
                               str(folder / "predictions.csv"), "--batch-size",
                               str(args.batch_size)]
        for name, cli_args in runs.items():
            r = run_child(cli_args)
            rows.append(f"| {name} | {size} | {mib:.0f} | {r['seconds']:.1f} | "
                        f"{size / r['seconds']:.0f} | {r['rss']:.0f} | {r['anon']:.0f} | "
                        f"{r['file']:.0f} |")
            print(rows[-1], flush=True)
        for f in folder.iterdir():
            if f.is_file():
                f.unlink()
    table = "\n".join(rows)
    print(table)
    if args.out:
        args.out.write_text(table + "\n")


if __name__ == "__main__":
    main()
