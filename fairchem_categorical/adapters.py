"""What a fairchem line's adapter must offer the app: one typed protocol per role.

The app reaches a line's work through ``Line.adapter(role)`` (``app/lines.py``), which
imports ``fairchem_categorical.fairchem<N>.<role>``. Each such module satisfies the
protocol of its role below (modules implement protocols, PEP 544), so a reader and a type
checker see what a new line must provide, and a test checks that both lines do
(``tests/core/test_adapter_roles.py``). A line's function may take further keyword
arguments with defaults (fairchem 2.x's ``predict_atoms`` takes ``inference_settings`` and
``task``); the app passes those only where ``Line`` says the line has them.

This module imports neither fairchem line, so the app and both adapters can import it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from ase import Atoms
    from ase.calculators.calculator import Calculator

    from fairchem_categorical.predictions import StructurePrediction
    from fairchem_categorical.screening import ScreeningTools

#: progress messages for a person
Say = Callable[[str], None]


class TrainAdapter(Protocol):
    """``fairchem<N>.train``: run fairchem's own training entry point."""

    def run(self, config: Path, run_dir: Path, timestamp_id: str, train_data: str | None,
            val_data: str | None, bins: str | Path | None, max_epochs: int | None,
            seed: int | None, overrides: list[str], say: Say | None,
            device: str | None = None) -> Path:
        """Train ``config`` in ``run_dir/timestamp_id``; the final checkpoint's path."""
        ...


class PredictAdapter(Protocol):
    """``fairchem<N>.predict``: a checkpoint's predictions for structures."""

    def predict_atoms(self, checkpoint: str | Path, frames: Sequence[Atoms],
                      batch_size: int = 8, device: str = "cpu",
                      progress: Say | None = None, seed: int = 0,
                      member_forces: bool = False) -> list[StructurePrediction]:
        """One prediction per frame, ``batch_size`` frames per forward pass."""
        ...

    def predict_stream(self, checkpoint: str | Path, frames: Iterable[Atoms],
                       batch_size: int = 8, device: str = "cpu",
                       progress: Say | None = None, seed: int = 0,
                       member_forces: bool = False) -> Iterator[list[StructurePrediction]]:
        """``predict_atoms`` one batch at a time, drawing ``frames`` (a stream) lazily:
        memory holds one batch of structures at any dataset size. ``member_forces``: a
        conservative shallow ensemble's per-atom spread of its members' forces."""
        ...


class UncertaintyAdapter(Protocol):
    """``fairchem<N>.uncertainty``: fit, read and write a checkpoint's epistemic state."""

    def require_categorical(self, checkpoint: str | Path, what: str) -> None:
        """A clear error, naming ``what``, unless the checkpoint has a categorical energy
        head."""
        ...

    def read_state(self, checkpoint: str | Path) -> dict[str, Any] | None:
        """The fitted epistemic state of the energy head; None if there is none."""
        ...

    def fit(self, checkpoint: str | Path, frames: Iterable[Atoms], method: str = ...,
            batch_size: int = 8, device: str = "cpu", progress: Say | None = None
            ) -> dict[str, Any]:
        """Fit the epistemic state in one pass over ``frames`` (a stream will do)."""
        ...

    def write(self, checkpoint: str | Path, out: str | Path,
              temperature_factor: float | None = None,
              epistemic: dict[str, Any] | None = None,
              alpha: dict[str, float] | None = None,
              predictive: dict[str, Any] | None = None,
              force_scale: float | None = None) -> float:
        """Copy ``checkpoint`` to ``out`` with the given state (``predictive``: each
        method's predictive scales, see ``epistemic.write_head_state``); the new
        temperature."""
        ...


class CalculatorAdapter(Protocol):
    """``fairchem<N>.calculator``: an ASE calculator with the uncertainty keys."""

    def load_calculator(self, checkpoint: str | Path, device: str | None = ...,
                        seed: int = ...) -> Calculator:
        """The line's calculator for ``checkpoint`` (defaults: the line's fairchem's)."""
        ...


class ScreeningAdapter(Protocol):
    """``fairchem<N>.screening``: what ``screen`` needs from fairchem and fairchem-data-oc."""

    def tools(self, checkpoint: str | Path, device: str = "cpu",
              task_name: str | None = None, seed: int = ...) -> ScreeningTools:
        """The calculator, placements and anomaly check."""
        ...

    def adsorbate_database(self) -> dict[str, tuple[Atoms, list[int]]]:
        """Adsorbates by SMILES: (atoms, binding indices)."""
        ...

    def write_vasp_inputs(self, atoms: Atoms, folder: Path) -> None:
        """VASP input files for a configuration sent to DFT."""
        ...


#: role name (the adapter module's name) -> its protocol
ROLES: dict[str, type] = {
    "train": TrainAdapter,
    "predict": PredictAdapter,
    "uncertainty": UncertaintyAdapter,
    "calculator": CalculatorAdapter,
    "screening": ScreeningAdapter,
}
