"""Running fairchem's own command line as a child process, for either line's ``train``.

Training goes through fairchem's entry point, never a private loop; what the plugin adds
is a run log that keeps everything fairchem printed, progress lines for the person
watching, and a clear error with the log's tail when fairchem fails.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

FAIRCHEM_CLI = [sys.executable, "-c", "from fairchem.core._cli import main; main()"]
_PROGRESS_KEYS = ("train/loss", "val/loss", ",mae:", "Started train epoch", "Training Completed",
                  "Error", "error:", "energy_mae:", "out of support", "never saw")


def progress_text(line: str) -> str:
    """A fairchem log line without its timestamp and source-path (or logger-name) prefix."""
    text = re.sub(r"^.*?\((INFO|WARNING)\): ", "", line.strip(), count=1)
    return re.sub(r"^(INFO|WARNING):[\w.]+:", "", text)[:200]


def is_progress(line: str) -> bool:
    return any(k in line for k in _PROGRESS_KEYS)


def run_logged(cmd: list[str], log: Path, say: Callable[[str], None] | None = None,
               env: dict[str, str] | None = None) -> int:
    """Run ``cmd``, its whole output to ``log``, progress lines to ``say``; the exit code.
    ``env``: variables added to this process's environment for the child."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as fh:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env={**os.environ, **env} if env else None)
        for line in proc.stdout or ():  # a pipe, as asked for
            fh.write(line)
            if say is not None and is_progress(line):
                say("  " + progress_text(line))
        return proc.wait()


def check_trained(code: int, final: Path, log: Path) -> Path:
    """The final checkpoint, or a clear error with the log's tail when fairchem failed."""
    if code != 0 or not final.is_file():
        tail = "".join(log.read_text().splitlines(keepends=True)[-25:])
        raise RuntimeError(f"fairchem training failed (exit {code}); last lines of {log}:\n{tail}")
    return final
