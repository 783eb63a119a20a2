"""Peak memory and throughput of ``fit-bins`` as the dataset grows (issue 16, item 2).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/scale.py --sizes 1000 10000 100000

Writes a synthetic ASE-LMDB per size (the embedded EMT frames, replicated row by row, so
writing needs no more memory than one row), then runs ``fairchem-categorical fit-bins`` on
it in a fresh process per size and reports that process's peak RSS
(``resource.getrusage(RUSAGE_CHILDREN)``) and structures per second (two streamed
passes). Flat peak RSS across sizes is what the streaming promises. Prints a Markdown
table; ``--out`` also writes it.
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


def run_child(args: list[str]) -> tuple[float, float]:
    """Seconds and peak RSS (MiB) of one fresh process running the CLI."""
    code = ("import resource, subprocess, sys, json; "
            "p = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
            "print(p.stderr[-2000:], file=sys.stderr) if p.returncode else None; "
            "print(json.dumps([p.returncode, resource.getrusage(resource.RUSAGE_CHILDREN)"
            ".ru_maxrss]))")
    t = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code, sys.executable, "-m",
                          "fairchem_categorical.app.cli", *args],
                         capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    seconds = time.perf_counter() - t
    rc, maxrss_kb = json.loads(out.stdout.strip().splitlines()[-1])
    if rc:
        raise RuntimeError(f"{' '.join(args)} failed: {out.stderr[-2000:]}")
    return seconds, maxrss_kb / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    ap.add_argument("--work", type=Path, help="scratch folder (default: a temporary one)")
    ap.add_argument("--out", type=Path, help="also write the table here")
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="scale_"))
    rows = ["| structures | write s | fit-bins s | fit-bins structures/s | peak RSS MiB |",
            "|---|---|---|---|---|"]
    for size in args.sizes:
        folder = work / str(size)
        folder.mkdir(parents=True, exist_ok=True)
        t = time.perf_counter()
        data = write_replicated(folder / "data.aselmdb", size)
        written = time.perf_counter() - t
        seconds, rss = run_child(["fit-bins", str(data), "--out", str(folder / "bins.yaml")])
        rows.append(f"| {size} | {written:.0f} | {seconds:.1f} | {size / seconds:.0f} | "
                    f"{rss:.0f} |")
        print(rows[-1], flush=True)
        data.unlink()
    table = "\n".join(rows)
    print(table)
    if args.out:
        args.out.write_text(table + "\n")


if __name__ == "__main__":
    main()
