"""Side-by-side timing and memory for the overhead benchmark (either fairchem line).

Cases run interleaved: repetition r runs every case once, in an order rotated by r, so
drift in the machine's load (other jobs on a shared machine) falls on all cases alike,
and each repetition gives one ratio. Reported: medians, and the median ratio with its
spread over repetitions (quartiles, min-max).

Peak memory: on CUDA, ``torch.cuda.max_memory_allocated`` around one call. On the CPU,
the peak resident set size of one call in a forked child (Linux): the child resets its
peak (``/proc/self/clear_refs``), runs the call once and reports ``VmHWM - VmRSS`` (the
memory the call added on top of what the model and batch already hold). Each call runs
in a fresh fork of the same parent, so no case reuses memory another case freed.
"""

from __future__ import annotations

import gc
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch


def sync(device: str) -> None:
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


#: the clock every timing uses: "cpu" (this process's CPU time) or "wall"; see ``set_clock``
CLOCK = {"name": "wall", "fn": time.perf_counter}


def set_clock(name: str) -> None:
    """``cpu``: ``time.process_time``, the CPU time of this process. On a shared machine a
    single-threaded run's wall time also counts the time other processes hold the core,
    which lands on whichever case is running; its CPU time does not. ``wall`` for GPUs
    (asynchronous kernels) or when threads are what is measured."""
    clocks = {"cpu": time.process_time, "wall": time.perf_counter}
    if name not in clocks:
        raise ValueError(f"unknown clock {name!r}; choose one of {list(clocks)}")
    CLOCK.update(name=name, fn=clocks[name])


def interleaved(cases: dict[str, Callable[[], object]], reps: int, warmup: int = 1,
                device: str = "cpu") -> dict[str, list[float]]:
    """Seconds per call of each case, ``reps`` repetitions, order rotated per repetition."""
    names = list(cases)
    for _ in range(warmup):
        for name in names:
            cases[name]()
    clock = CLOCK["fn"]
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(reps):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            sync(device)
            t = clock()
            cases[name]()
            sync(device)
            times[name].append(clock() - t)
    return times


@dataclass
class Ratio:
    """case / baseline per repetition: the median and its spread."""

    median: float
    q25: float
    q75: float
    low: float
    high: float
    values: list[float] = field(repr=False)

    @classmethod
    def of(cls, case: Sequence[float], baseline: Sequence[float]) -> Ratio:
        r = np.asarray(case, dtype=float) / np.asarray(baseline, dtype=float)
        q25, med, q75 = np.quantile(r, [0.25, 0.5, 0.75])
        return cls(float(med), float(q25), float(q75), float(r.min()), float(r.max()),
                   [float(x) for x in r])

    def text(self) -> str:
        return (f"{self.median:.3f} [{self.q25:.3f}, {self.q75:.3f}] "
                f"({self.low:.3f}-{self.high:.3f})")


def median_ms(values: Sequence[float]) -> float:
    return 1000.0 * statistics.median(values)


def _status_kb(field_name: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field_name} not in /proc/self/status")


def can_fork_measure() -> bool:
    return sys.platform.startswith("linux") and os.path.exists("/proc/self/clear_refs")


def _malloc_trim() -> None:
    """Give freed heap back to the OS, so a child cannot reuse the parent's free memory."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def peak_rss_mb(fn: Callable[[], object]) -> float | None:
    """Peak resident memory one call of ``fn`` adds (MiB), in a forked child; None off Linux."""
    if not can_fork_measure():
        return None
    gc.collect()
    _malloc_trim()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: reset the peak, run once, report, exit without cleanup
        os.close(read)
        try:
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")
            before = _status_kb("VmRSS")
            fn()
            peak = _status_kb("VmHWM")
            os.write(write, json.dumps((peak - before) / 1024.0).encode())
        except BaseException as err:  # noqa: BLE001  (report any failure to the parent)
            os.write(write, json.dumps(f"error: {err!r}").encode())
        finally:
            os._exit(0)
    os.close(write)
    chunks = []
    while chunk := os.read(read, 4096):
        chunks.append(chunk)
    os.close(read)
    os.waitpid(pid, 0)
    value = json.loads(b"".join(chunks) or b"null")
    if isinstance(value, str):
        raise RuntimeError(f"peak-memory child failed: {value}")
    return value


def cuda_peak_mb(fn: Callable[[], object], device: str) -> float:
    """Peak CUDA memory allocated during one call of ``fn`` (MiB), above what was held."""
    torch.cuda.synchronize()
    gc.collect()
    torch.cuda.empty_cache()
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated(device) - base) / 2**20


def peak_mb(fn: Callable[[], object], device: str, repeats: int = 3) -> float | None:
    """Median over ``repeats`` of the peak memory one call adds (CUDA or CPU RSS)."""
    if str(device).startswith("cuda"):
        return statistics.median(cuda_peak_mb(fn, device) for _ in range(repeats))
    values = [peak_rss_mb(fn) for _ in range(repeats)]
    return None if values[0] is None else statistics.median(values)


def machine(device: str) -> dict[str, object]:
    """What the numbers were measured on, and how busy it was."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next((line.split(":", 1)[1].strip() for line in fh
                        if line.startswith("model name")), cpu)
    except OSError:
        pass
    info: dict[str, object] = {
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "host_cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
        "python": platform.python_version(),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
    }
    if str(device).startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(device)
    if hasattr(os, "getloadavg"):
        info["load_average_1_5_15"] = [round(x, 2) for x in os.getloadavg()]
    return info


def markdown(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
