"""``screen``: adsorption-energy screening with the installed line's calculator.

Wires the core screening (``fairchem_categorical.screening``) to the adapter's tools
(calculator, fairchem-data-oc placements, anomaly check) and writes the outputs:
``screen.csv`` (one row per configuration), ``structures.extxyz`` (relaxed slabs and
configurations with their uncertainties), ``screen.png`` (ranked adsorption energies
with 90% intervals), ``summary.md``, and optionally VASP inputs for the configurations
recommended for DFT.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from fairchem_categorical import screening
from fairchem_categorical.app import checks, lines

Say = Callable[[str], None]


def read_references(path: str | Path | None) -> dict[str, float] | None:
    """Gas-phase per-atom references from a JSON file ``{"O": -7.204, ...}`` (None: OC20's)."""
    if path is None:
        return None
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--gas-references {path}: no such file")
    refs = json.loads(path.read_text())
    if not isinstance(refs, dict) or not all(isinstance(v, int | float) for v in refs.values()):
        raise ValueError(f"{path}: expected a JSON object of element -> energy (eV)")
    return {str(k): float(v) for k, v in refs.items()}


def run_screen(checkpoint: str | Path, slabs: Sequence[str], adsorbates: Sequence[str],
               out: str | Path, num_placements: int = 10, fmax: float = 0.05,
               steps: int = 200, mode: str = "heuristic", coverage: float | None = 0.9,
               budget: int | None = None, top_k: int = 5,
               gas_references: str | Path | None = None, seed: int = 0, device: str = "cpu",
               vasp: bool = False, say: Say | None = None,
               tools: screening.ScreeningTools | None = None,
               adsorbate_db: dict | None = None) -> list[screening.SystemResult]:
    """Screen every slab x adsorbate system; write the outputs to ``out``.

    ``tools``/``adsorbate_db`` default to the installed line's adapter (tests may pass
    their own, e.g. an EMT calculator).
    """
    from tqdm import tqdm

    if budget is not None:
        coverage = None
    checks.device(device)
    if not Path(checkpoint).is_file() and tools is None:
        raise FileNotFoundError(f"checkpoint not found: {checkpoint}")
    out = Path(out)
    references = read_references(gas_references)
    adapter = None
    if tools is None or adsorbate_db is None:
        adapter = lines.current("screen").adapter("screening")
    tools = tools or adapter.tools(checkpoint, device=device)
    database = adsorbate_db if adsorbate_db is not None else adapter.adsorbate_database()
    specs = [screening.adsorbate_spec(name, database) for name in adsorbates]
    systems = [(name, slab, spec) for name, slab in map(screening.read_slab, slabs)
               for spec in specs]
    results = []
    start = time.time()
    for name, slab, spec in systems:
        system = f"{name}+{spec.name}"
        bar = tqdm(total=num_placements + 1, desc=system, unit="relaxation", leave=True)

        def progress(done: int, total: int, bar=bar) -> None:  # noqa: ANN001
            bar.total = total
            bar.n = done
            bar.refresh()

        results.append(screening.screen_system(
            system, slab, spec, tools, num_placements=num_placements, fmax=fmax, steps=steps,
            mode=mode, seed=seed, references=references, coverage=coverage, budget=budget,
            top_k=top_k, progress=progress))
        bar.close()
    write_outputs(results, out, vasp=vasp)
    if say:
        say(screening.summary_table(results))
        say(f"screened {len(results)} systems in {time.time() - start:.0f} s; wrote "
            f"{out / 'screen.csv'}, {out / 'structures.extxyz'}, {out / 'screen.png'}")
    return results


def write_outputs(results: Sequence[screening.SystemResult], out: Path, vasp: bool = False
                  ) -> None:
    from ase.io import write

    from fairchem_categorical.report.plots import plot_screening

    out.mkdir(parents=True, exist_ok=True)
    screening.write_csv(results, out / "screen.csv")
    write(out / "structures.extxyz", screening.structures(results))
    plot_screening(screening.rows(results), out / "screen.png")
    lines_md = [screening.summary_table(results), ""]
    for s in results:
        lines_md.append(
            f"- {s.system}: send {sum(c.send_to_dft for c in s.configurations)} of "
            f"{len(s.configurations)} to DFT (P(true minimum among them) = "
            f"{s.coverage_reached:.3f}); AdsorbML's top-k holds it with P = "
            f"{s.adsorbml_coverage:.3f}; anomalies: "
            f"{sum(bool(c.anomalies) for c in s.configurations)}")
    (out / "summary.md").write_text("\n".join(lines_md) + "\n")
    if vasp:
        adapter = lines.current("screen --vasp").adapter("screening")
        for s in results:
            for c in s.configurations:
                if c.send_to_dft:
                    folder = out / "vasp" / s.system / f"config_{c.configuration}"
                    try:
                        adapter.write_vasp_inputs(c.relaxed.atoms, folder)
                    except (RuntimeError, OSError, KeyError) as err:
                        raise RuntimeError(
                            f"writing VASP inputs failed ({err}); fairchem-data-oc's writer "
                            "needs the VASP pseudopotentials (VASP_PP_PATH)") from err
