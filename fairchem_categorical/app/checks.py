"""Checks of what a person asks for, made before any slow work starts.

An output that cannot be written, a device that is not there, an output that would
overwrite its own input: each becomes one clear message naming the flag and the path,
instead of a traceback after minutes of prediction.
"""

from __future__ import annotations

import os
from pathlib import Path


def _probe_write(path: Path, flag: str) -> None:
    """Create (or open for append) ``path`` to learn whether it can be written; undo."""
    existed = path.exists()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a"):
            pass
    except IsADirectoryError as err:
        raise ValueError(f"{flag} {path}: is a directory; give a file path") from err
    except (NotADirectoryError, FileExistsError) as err:  # mkdir over a file: FileExists
        raise ValueError(f"{flag} {path}: a parent of it is a file, not a folder") from err
    except PermissionError as err:
        raise ValueError(f"{flag} {path}: cannot write there (permission denied)") from err
    except OSError as err:
        raise ValueError(f"{flag} {path}: cannot write there ({err.strerror or err})") from err
    finally:
        if not existed and path.is_file() and path.stat().st_size == 0:
            path.unlink()


def output_file(path: str | Path, flag: str = "--out") -> Path:
    """A file path that can be written (its folder is made); a clear error otherwise."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{flag} {path}: is a directory; give a file path, e.g. "
                         f"{path / 'predictions.csv'}")
    _probe_write(path, flag)
    return path


def output_folder(path: str | Path, flag: str = "--out") -> Path:
    """A folder that exists (made if needed) and takes new files; a clear error otherwise."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{flag} {path}: is a file; give a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(f"{flag} {path}: cannot make the folder ({err.strerror or err})"
                         ) from err
    probe = path / f".write-test-{os.getpid()}"
    _probe_write(probe, flag)
    probe.unlink(missing_ok=True)
    return path


def not_the_input(out: str | Path, source: str | Path, what: str) -> None:
    """Refuse an output that is the input itself (it would be overwritten)."""
    out, source = Path(out), Path(source)
    same = out.resolve() == source.resolve() or (
        out.exists() and source.exists() and os.path.samefile(out, source))
    if same:
        raise ValueError(f"--out {out} is the {what} itself; writing there would overwrite "
                         "the original: give another path")


def device(name: str) -> str:
    """``cpu``, ``cuda`` or ``cuda:N`` that this machine has (``devices.check_device``)."""
    from fairchem_categorical.devices import check_device

    return check_device(name)
