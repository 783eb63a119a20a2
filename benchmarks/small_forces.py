"""Small-force bias of the categorical direct-force magnitude: [0, F_max] vs symmetric bins.

    .venv/bin/python benchmarks/small_forces.py [--seeds 3] [--out benchmarks/out]

1. Round trip: decode(encode(y)), the value a perfect fit of the HL-Gauss target decodes to.
2. Fitted: ``ForceMagnitudeReadout`` (the heads' own readout) trained with cross-entropy
   on features of y (Gaussian RBFs), y drawn like EMT forces near a minimum (20% exactly 0,
   the rest exponential with mean 0.4 eV/A); the decoded magnitude at held-out y.
Supports: the old ``[0, F_max]`` (128 bins), the symmetric ``[-F_max, F_max]`` that fit-bins
writes now (128 bins), and symmetric with 256 bins (the old bin width). F_max is the
embedded bins' 21.57 eV/A. Pure torch, seconds on a CPU.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from fairchem_categorical.losses import soft_cross_entropy  # noqa: E402
from fairchem_categorical.readout import ForceMagnitudeReadout  # noqa: E402
from fairchem_categorical.report.tables import rows_table  # noqa: E402

F_MAX = 21.5707202679217
SUPPORTS = {
    "[0, F_max], 128 bins (old)": {"low": 0.0, "high": F_MAX, "num_bins": 128},
    "[-F_max, F_max], 128 bins": {"low": -F_MAX, "high": F_MAX, "num_bins": 128},
    "[-F_max, F_max], 256 bins": {"low": -F_MAX, "high": F_MAX, "num_bins": 256},
}
PROBES = (0.0, 0.02, 0.05, 0.1, 0.5, 2.0)


def features(y: torch.Tensor, n: int = 32) -> torch.Tensor:
    centers = torch.linspace(0.0, 3.0, n)
    return torch.exp(-((y.unsqueeze(-1) - centers) / 0.1) ** 2)


def draw(n: int, gen: torch.Generator) -> torch.Tensor:
    y = torch.empty(n).exponential_(1 / 0.4, generator=gen).clamp(max=3.0)
    y[torch.rand(n, generator=gen) < 0.2] = 0.0
    return y


def fit(support: dict, seed: int, steps: int = 600) -> ForceMagnitudeReadout:
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    readout = ForceMagnitudeReadout(32, 64, support, prior_mean=0.4)
    opt = torch.optim.Adam(readout.parameters(), lr=3e-3)
    for _ in range(steps):
        y = draw(256, gen)
        logits = readout.magnitude_block(features(y))
        loss = soft_cross_entropy(logits, readout.support.encode(y)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return readout


@torch.no_grad()
def decoded(readout: ForceMagnitudeReadout, y: torch.Tensor) -> torch.Tensor:
    direction = torch.tensor([[0.0, 0.0, 1.0]]).expand(len(y), 3)
    return readout.readout(features(y), direction)["forces"][:, 2]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results",
                   help="folder for small_forces.md")
    args = p.parse_args()
    torch.set_num_threads(1)
    probes = torch.tensor(PROBES)
    rows = []
    for name, spec in SUPPORTS.items():
        readout = ForceMagnitudeReadout(32, 64, spec)
        trip = readout.support.mean(torch.log(readout.support.encode(probes).clamp_min(1e-30)))
        fitted = np.stack([decoded(fit(spec, s), probes).numpy() for s in range(args.seeds)])
        for i, y in enumerate(PROBES):
            rows.append([name, f"{y:.2f}", f"{float(trip[i]) - y:+.4f}",
                         f"{fitted[:, i].mean() - y:+.4f} ± {fitted[:, i].std():.4f}"])
    table = rows_table(
        ["support", "|F| (eV/A)", "round-trip bias (eV/A)",
         f"fitted bias (eV/A), mean ± std over {args.seeds} seeds"], rows)
    print(table)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "small_forces.md").write_text(table + "\n")


if __name__ == "__main__":
    main()
