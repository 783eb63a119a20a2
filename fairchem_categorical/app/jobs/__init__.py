"""What the commands do, once the line is chosen: one module per job.

The CLI (``app/cli``) only turns arguments into these calls; the demo, active learning,
the benchmarks and the tests call them too. Each picks its fairchem line through
``app.lines`` and hands the line's work to its adapter (``fairchem_categorical.adapters``
says what each adapter offers).
"""

from fairchem_categorical.app.jobs.calibrate import CALIBRATION_KEYS, calibrate
from fairchem_categorical.app.jobs.evaluate import evaluate_checkpoint
from fairchem_categorical.app.jobs.fit_uncertainty import fit_uncertainty
from fairchem_categorical.app.jobs.predict import predict_files, predict_to_files, stream_files
from fairchem_categorical.app.jobs.train import train

__all__ = ["CALIBRATION_KEYS", "calibrate", "evaluate_checkpoint", "fit_uncertainty",
           "predict_files", "predict_to_files", "stream_files", "train"]
