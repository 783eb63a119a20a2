"""Slow per-system work that shows progress, uses every core and survives being killed.

Labelling a realistic dataset takes minutes to an hour. Each finished system is written
at once to its own file in a cache folder (atomically: a killed run leaves whole files or
none), a re-run loads those and computes only the rest, one worker process per core works
through the rest, and a progress bar with an ETA goes to stderr.
"""

from __future__ import annotations

import os
import pickle
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from tqdm import tqdm

__all__ = ["default_workers", "run_resumable"]

#: Environment each worker starts with: one thread per process, models offline.
_WORKER_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
               "HF_HUB_OFFLINE": "1"}


def default_workers() -> int:
    """One worker per core this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def _one_thread() -> None:
    """Worker initializer: one torch thread (the environment already says so for BLAS)."""
    import torch

    torch.set_num_threads(1)


def _cache_file(cache_dir: Path, key: int) -> Path:
    return cache_dir / f"system_{key:06d}.pkl"


def _store(path: Path, result: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as fh:
        pickle.dump(result, fh)
    os.replace(tmp, path)


def _load(path: Path) -> Any | None:
    """A cached result, or None for a file a crash left unreadable (it is recomputed)."""
    try:
        with open(path, "rb") as fh:
            return pickle.load(fh)
    except (OSError, EOFError, pickle.UnpicklingError):
        return None


def run_resumable(
    work: Callable[[int], Any],
    keys: Sequence[int],
    cache_dir: str | Path,
    *,
    workers: int = 1,
    desc: str = "systems",
) -> dict[int, Any]:
    """``work(key)`` for every key, each result cached in ``cache_dir`` as it finishes.

    Keys whose result is cached are not recomputed. ``workers > 1`` runs the rest in that
    many spawned processes (``work`` must then be picklable: a module-level function or
    an instance of a module-level class), each with one thread. Returns results by key.
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    results: dict[int, Any] = {}
    for key in keys:
        path = _cache_file(cache_dir, key)
        if path.exists() and (cached := _load(path)) is not None:
            results[key] = cached
    todo = [k for k in keys if k not in results]
    bar = tqdm(total=len(keys), initial=len(results), desc=desc, unit="system",
               file=sys.stderr, dynamic_ncols=True, smoothing=0.1)
    try:
        if workers == 1 or len(todo) <= 1:
            import torch

            threads = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                for key in todo:
                    results[key] = work(key)
                    _store(_cache_file(cache_dir, key), results[key])
                    bar.update()
            finally:
                torch.set_num_threads(threads)
        else:
            results.update(_in_workers(work, todo, cache_dir, min(workers, len(todo)), bar))
    finally:
        bar.close()
    return {k: results[k] for k in keys}


def _in_workers(work: Callable[[int], Any], todo: Sequence[int], cache_dir: Path,
                workers: int, bar: tqdm) -> dict[int, Any]:
    """Run ``todo`` in ``workers`` spawned processes; store each result as it arrives."""
    saved = {k: os.environ.get(k) for k in _WORKER_ENV}
    os.environ.update(_WORKER_ENV)  # spawned children inherit it before importing numpy
    done: dict[int, Any] = {}
    try:
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn"),
                                 initializer=_one_thread) as pool:
            pending = {pool.submit(work, key): key for key in todo}
            try:
                while pending:
                    finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                    for future in finished:
                        key = pending.pop(future)
                        done[key] = future.result()
                        _store(_cache_file(cache_dir, key), done[key])
                        bar.update()
            except BaseException:
                for future in pending:
                    future.cancel()
                raise
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return done
