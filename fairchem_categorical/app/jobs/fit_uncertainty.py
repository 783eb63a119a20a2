"""``fit-uncertainty``: fit the epistemic state after training, then calibrate."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from fairchem_categorical.adapters import Say
from fairchem_categorical.app import checks, lines
from fairchem_categorical.app.jobs.calibrate import calibrate_with


def fit_uncertainty(checkpoint: str | Path, train: Sequence[str | Path],
                    val: Sequence[str | Path] | None, out: str | Path,
                    method: str | None = None, batch_size: int = 8, device: str = "cpu",
                    fit_temperature: bool = False, progress: Say | None = None
                    ) -> dict[str, float]:
    """Fit the epistemic state on ``train`` (one pass), then calibrate on ``val``.

    Writes ``out``, a copy of ``checkpoint`` whose energy head carries the fitted state:
    every loader of the model (predict, evaluate, calculators) applies it. Without
    ``val`` the scales stay at 1 (uncalibrated) and ``energy_uncertainty`` is not yet
    meaningful in eV; run ``calibrate`` later. The fit and both calibration passes run on
    ``device``. The training data stream through the model one batch at a time (the
    statistics are sums, the same size at any dataset size); the calibration passes keep
    every validation structure's record (numbers, not Atoms: ``calibrate``).
    """
    from fairchem_categorical.data.formats import open_frames
    from fairchem_categorical.epistemic import DEFAULT_METHOD

    line = lines.for_checkpoint(checkpoint, "fit-uncertainty")
    checks.device(device)
    checks.output_file(out)
    adapter = line.adapter("uncertainty")
    adapter.require_categorical(checkpoint, "fit-uncertainty")
    frames = open_frames(train, require_labels=False)
    t = time.time()
    if progress:
        progress("fitting the feature statistics on the training structures")
    state = adapter.fit(checkpoint, frames, method or DEFAULT_METHOD, batch_size=batch_size,
                        device=device, progress=progress)
    fit_seconds = time.time() - t
    if progress:
        elements = ", ".join(f"Z={int(z)}: {int(n)}" for z, n in
                             zip(state["elements"], state["element_counts"], strict=True))
        progress(f"fitted {state['method']} on {state['num_structures']} structures "
                 f"({elements} atoms) in {fit_seconds:.0f} s")
    adapter.write(checkpoint, out, epistemic=state)
    result = {"fit_seconds": fit_seconds}
    if val:
        result.update(calibrate_with(adapter, out, val, out, fit_temperature, progress, device))
    return result
