"""The one table of what differs between the two fairchem lines, and the choice of line.

fairchem-core 2.x (eSEN / UMA, Hydra configs, ASE-LMDB) and 1.10 (EquiformerV2 / eSEN,
OCP-trainer configs, pyg-LMDB) cannot share an environment. Each adapter package
(``fairchem_categorical.fairchem2``, ``.fairchem1``) offers the same modules (``train``,
``predict``, ...) with the same functions; this module is the only place that picks one:
by a config's shape for ``train``, by the installed fairchem-core for everything that
loads a checkpoint (a checkpoint loads only in its own line's environment).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Literal, overload

import yaml

from fairchem_categorical.adapters import (
    CalculatorAdapter,
    PredictAdapter,
    ScreeningAdapter,
    TrainAdapter,
    UncertaintyAdapter,
)

#: the shipped configs: package data (``fairchem_categorical/configs``), so a normal, non-
#: editable install has them too; the repository's ``configs`` is a link to this folder
PACKAGE_CONFIGS = Path(str(resources.files("fairchem_categorical") / "configs"))


@dataclass(frozen=True)
class Line:
    major: int
    label: str              # "fairchem-core 2.x"
    venv: str               # the environment the README's commands create for it
    data_format: str        # dataset format of make-dataset / convert for this line
    backbone: str           # the demo's backbone
    categorical_config: str  # the demo's categorical and scalar configs
    scalar_config: str
    scalar_takes_bins: bool  # 2.x scalar configs take element references from the bins file
    # what the line offers instead of fairchem 2.x's inference-settings presets (None: has them)
    no_inference_settings: str | None = None
    # why the line's checkpoints have no tasks to choose between (None: they have)
    no_tasks: str | None = None

    @property
    def package(self) -> str:
        return f"fairchem_categorical.fairchem{self.major}"

    @property
    def configs(self) -> Path:
        return PACKAGE_CONFIGS / f"fairchem{self.major}"

    @overload
    def adapter(self, module: Literal["train"]) -> TrainAdapter: ...
    @overload
    def adapter(self, module: Literal["predict"]) -> PredictAdapter: ...
    @overload
    def adapter(self, module: Literal["uncertainty"]) -> UncertaintyAdapter: ...
    @overload
    def adapter(self, module: Literal["calculator"]) -> CalculatorAdapter: ...
    @overload
    def adapter(self, module: Literal["screening"]) -> ScreeningAdapter: ...

    def adapter(self, module: str) -> object:
        """This line's adapter module for a role of ``adapters.ROLES`` (``train``,
        ``predict``, ``uncertainty``, ``calculator``, ``screening``), typed by its
        protocol."""
        try:
            return importlib.import_module(f"{self.package}.{module}")
        except ModuleNotFoundError as err:
            if err.name != f"{self.package}.{module}":
                raise
            raise RuntimeError(f"{module} is not available on {self.label}") from err


LINES: dict[int, Line] = {
    2: Line(2, "fairchem-core 2.x", ".venv", "aselmdb", "eSEN",
            "esen_categorical_conserving.yaml", "esen_scalar_conserving.yaml", True),
    1: Line(1, "fairchem-core 1.10", ".venv-fairchem1", "pyg-lmdb", "EquiformerV2",
            "equiformer_v2_categorical.yml", "equiformer_v2_scalar.yml", False,
            no_inference_settings="fairchem-core 1.10 has no inference-settings presets (no "
            "merge_mole, no compile path); its one speed knob is automatic mixed precision "
            "on CUDA (--amp when training, OCPCalculator(disable_amp=False))",
            no_tasks="fairchem-core 1.10 checkpoints predict one energy; there are no tasks "
            "to choose between"),
}


def installed_line() -> int | None:
    """Major version of the fairchem-core in this environment (1 or 2), or None."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return int(version("fairchem-core").split(".")[0])
    except PackageNotFoundError:
        return None


def config_line(config: Path) -> int:
    """Which fairchem line a config is for: 1 (OCP trainer YAML) or 2 (Hydra ``fairchem -c``)."""
    try:
        top = yaml.safe_load(Path(config).read_text()) or {}
    except yaml.YAMLError as err:
        raise ValueError(f"{config}: not valid YAML ({err})") from err
    if not isinstance(top, dict):
        raise ValueError(f"{config}: expected a mapping at the top level")
    if top.keys() & {"trainer", "optim", "includes", "loss_functions"}:
        return 1
    if top.keys() & {"defaults", "runner", "job"}:
        return 2
    raise ValueError(f"{config}: neither a fairchem 1.10 (trainer/optim/includes) nor a "
                     "fairchem 2.x (defaults/runner/job) config")


def checkpoint_line(checkpoint: str | Path) -> int | None:
    """Which fairchem line wrote a checkpoint: 2 (inference checkpoint), 1 (trainer dict).

    Read from the pickle's opcodes without unpickling (which needs that line's classes):
    fairchem-core 2.x saves an ``MLIPInferenceCheckpoint``, 1.x a dict with ``config`` and
    ``state_dict``. None for torch's pre-1.6 file format (left to the loader); a clear
    error for a file that is no checkpoint at all.
    """
    import pickletools
    import zipfile

    path = Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}" + (
            " (a folder: give the checkpoint file, e.g. .../checkpoints/final/"
            "inference_ckpt.pt or .../checkpoint.pt)" if path.is_dir() else ""))
    if not zipfile.is_zipfile(path):
        with path.open("rb") as fh:
            head = fh.read(2)
        if head[:1] == b"\x80":  # a bare pickle: torch's legacy format
            return None
        if head == b"PK":
            raise ValueError(f"{path} is a damaged or truncated checkpoint (the zip archive "
                             "torch.save writes is incomplete; copy it again)")
        raise ValueError(f"{path} is not a checkpoint (not a file torch.save wrote)")
    try:
        with zipfile.ZipFile(path) as zf:
            name = next((n for n in zf.namelist() if n.endswith("/data.pkl")), None)
            ops = [] if name is None else list(pickletools.genops(zf.read(name)))
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as err:
        raise ValueError(f"{path} is not a readable checkpoint ({err})") from err
    if name is None:
        raise ValueError(f"{path} is not a checkpoint (a zip file without the data.pkl "
                         "torch.save writes)")
    texts = {str(arg) for op, arg, _ in ops if isinstance(arg, str)}
    if any("MLIPInferenceCheckpoint" in t for t in texts):
        return 2
    if {"config", "state_dict"} <= texts:
        return 1
    raise ValueError(f"{path} is a torch file but not a fairchem checkpoint (neither a "
                     "fairchem-core 2.x inference checkpoint nor a 1.x trainer checkpoint)")


def for_checkpoint(checkpoint: str | Path, what: str) -> Line:
    """The line that loads ``checkpoint``, if it is installed; else a clear error."""
    major = checkpoint_line(checkpoint)
    if major is None:
        return current(what)
    return require(major, f"{what} of {checkpoint} (a {LINES[major].label} checkpoint)")


def require(major: int, what: str) -> Line:
    """Line ``major``, if it is the installed one; else an error naming the environment."""
    line, found = LINES[major], installed_line()
    if found != major:
        have = "no fairchem-core" if found is None else f"fairchem-core {found}.x"
        raise RuntimeError(f"{what} needs {line.label}, but this environment has {have}; "
                           f"run it with {line.venv}/bin/fairchem-categorical (see the README)")
    return line


def current(what: str) -> Line:
    """The installed line, for commands that load a checkpoint (it loads only there)."""
    found = installed_line()
    if found not in LINES:
        raise RuntimeError(f"{what} needs fairchem-core (1.10 in .venv-fairchem1, 2.x in .venv); "
                           "see the README")
    return LINES[found]
