"""fairchem-core 1.10 part of the overhead benchmark (run through ``overhead.py``).

Each model is fairchem 1.10's own ``OCPTrainer``, built in this process from the shipped
configs exactly as ``fairchem --mode train`` builds it (``build_config`` with command-line
overrides, then the trainer class from the registry; no process group, so no one-rank
DDP wrapper): the categorical config and its
scalar twin (EquiformerV2: ``equiformerV2_scalar_head`` + ``equiformerV2_vector_head``;
eSEN: ``esen_mlp_efs_head``), the same backbone overrides and seed.

- training step: the trainer's ``_forward`` and ``_compute_loss`` (its loss functions,
  normalizers and masks), then ``backward`` (gradient forces with ``create_graph`` for
  eSEN);
- inference: ``_forward`` in eval mode under ``no_grad``, as the trainer's ``predict``;
- item load: ``CategoricalLmdbDataset`` (the energy in the binning space and every atom's
  |F| added on load; the histograms are encoded per batch in ``CategoricalTrainer``'s
  loss path, which the training step includes) vs fairchem's ``LmdbDataset``.
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from timing import Ratio, interleaved, median_ms, peak_mb

REPO = Path(__file__).resolve().parent.parent
CONFIGS = REPO / "configs" / "fairchem1"
LINE = "fairchem-core 1.10"

MODELS = {
    "equiformer_v2": ("equiformer_v2_categorical.yml", "equiformer_v2_scalar.yml"),
    "esen": ("esen_categorical_conserving.yml", "esen_scalar_conserving.yml"),
}
MODEL_LABELS = {
    "equiformer_v2": "EquiformerV2 (direct forces: categorical energy + force-magnitude heads)",
    "esen": "eSEN (esen_backbone, gradient forces)",
}
SIZES = {"tiny": (16, 1, 2), "cpu": (32, 2, 2), "wide": (64, 2, 2), "paper": (128, 2, 2)}

#: sizes measured by default, per model kind (EquiformerV2 is ~5x slower per step on CPU)
DEFAULT_SIZES = {"equiformer_v2": ["cpu", "wide"], "esen": ["cpu", "wide", "paper"]}


def size_label(size: str) -> str:
    channels, lmax, layers = SIZES[size]
    return f"{size} ({channels} ch, lmax {lmax}, {layers} layers)"


def size_overrides(kind: str, size: str) -> list[str]:
    channels, lmax, layers = SIZES[size]
    b = "--model.backbone."
    common = [f"{b}sphere_channels={channels}", f"{b}edge_channels={channels}",
              f"{b}num_layers={layers}"]
    if kind == "equiformer_v2":
        return [*common, f"{b}attn_hidden_channels={channels}",
                f"{b}ffn_hidden_channels={2 * channels}", f"{b}lmax_list=[{lmax}]",
                f"{b}mmax_list=[{lmax}]"]
    return [*common, f"{b}hidden_channels={channels}", f"{b}lmax={lmax}", f"{b}mmax={lmax}"]


def make_data(root: Path, say: Callable[[str], None], given: Path | None = None
              ) -> dict[str, Path]:
    """The embedded set (10 systems), or the train/val/test folders of ``given`` (pyg-lmdb)."""
    from fairchem_categorical.data import make_dataset

    if given is not None:
        say(f"[data] the dataset in {given}")
        return {name: given / name for name in ("train", "val", "test")}

    say(f"[data] embedded adsorbate+slab structures (pyg-lmdb) in {root}")
    return make_dataset(root / "data", n_systems=10, seed=0, overwrite=True, fmt="pyg-lmdb")


_IMPORTED = False


def _setup_once(config: dict[str, Any]) -> None:
    """fairchem's imports, once per process. No process group: the peak-memory children
    are forks, and a forked DDP/gloo rank hangs (one rank's DDP wrap costs both alike)."""
    global _IMPORTED
    from fairchem.core.common.utils import setup_imports, setup_logging

    if not _IMPORTED:
        setup_logging()
        setup_imports(config)
        _IMPORTED = True


def build_trainer(config: Path, overrides: list[str], root: Path, tag: str,
                  device: str = "cpu") -> Any:
    """fairchem 1.10's trainer for ``config`` as ``fairchem --mode train`` builds it."""
    from fairchem.core.common.flags import flags
    from fairchem.core.common.registry import registry
    from fairchem.core.common.utils import build_config

    import fairchem_categorical.fairchem1  # noqa: F401  (registers heads, loss, dataset)

    args, extra = flags.get_parser().parse_known_args(
        ["--mode", "train", "--config-yml", str(config), "--debug",
         *(["--cpu"] if device == "cpu" else []),
         "--run-dir", str(root / "runs" / tag), "--identifier", tag, *overrides])
    cfg = build_config(args, extra)
    cfg["logger"] = "tensorboard"
    _setup_once(cfg)
    cfg["local_rank"] = 0
    return registry.get_trainer_class(cfg.get("trainer", "ocp"))(
        task=cfg.get("task", {}), model=cfg["model"], outputs=cfg.get("outputs", {}),
        dataset=cfg["dataset"], optimizer=cfg["optim"],
        loss_functions=cfg.get("loss_functions", {}),
        evaluation_metrics=cfg.get("evaluation_metrics", {}), identifier=tag,
        local_rank=0, run_dir=str(root / "runs" / tag), is_debug=True, print_every=1000,
        seed=0, logger="tensorboard", amp=False, cpu=device == "cpu", name="ocp")


def _spread(n: int, k: int) -> list[int]:
    return sorted({int(round(x)) for x in np.linspace(0, n - 1, k)})


@dataclass
class Variant:
    name: str
    trainer: Any
    batch: Any

    @classmethod
    def build(cls, config: str, overrides: list[str], batch_size: int, root: Path,
              tag: str, device: str = "cpu") -> Variant:
        torch.manual_seed(0)
        trainer = build_trainer(CONFIGS / config, overrides, root, tag, device)
        ds = trainer.train_dataset
        batch = trainer.collater([ds[i] for i in _spread(len(ds), batch_size)])
        return cls(config, trainer, batch.to(trainer.device))

    def train_step(self) -> None:
        t = self.trainer
        t.model.train()
        self.batch.pos.grad = None
        binner = getattr(t, "binner", None)  # the categorical trainer bins in _compute_loss:
        for key in binner.keys.values() if binner else ():  # bin again in every step timed
            if key in self.batch:
                del self.batch[key]
        out = t._forward(self.batch)
        loss = t._compute_loss(out, self.batch)
        t.optimizer.zero_grad(set_to_none=True)
        loss.backward()

    def infer_step(self) -> None:
        self.trainer.model.eval()
        with torch.no_grad():
            self.trainer._forward(self.batch)

    @property
    def num_params(self) -> int:
        return sum(p.numel() for p in self.trainer.model.parameters())


def _data_overrides(data: dict[str, Path], root: Path, tag: str) -> list[str]:
    """The splits copied for one trainer: an LMDB environment opens once per process."""
    copies = {}
    for split in ("train", "val"):
        copies[split] = root / "copies" / tag / split
        shutil.copytree(data[split], copies[split], dirs_exist_ok=True)
    return [f"--dataset.train.src={copies['train']}", f"--dataset.val.src={copies['val']}"]


def steps(kinds: Sequence[str], sizes: Sequence[str] | None, batch_size: int, reps: int,
          device: str, data: dict[str, Path], root: Path, memory: bool,
          say: Callable[[str], None]) -> list[dict[str, Any]]:
    rows = []
    for kind in kinds:
        cat_cfg, scalar_cfg = MODELS[kind]
        for size in sizes or DEFAULT_SIZES[kind]:
            tags = {v: f"{kind}_{size}_{v}" for v in ("cat", "scalar")}
            cat = Variant.build(cat_cfg, [*_data_overrides(data, root, tags["cat"]),
                                          *size_overrides(kind, size)],
                                batch_size, root, tags["cat"], device)
            scalar = Variant.build(scalar_cfg, [*_data_overrides(data, root, tags["scalar"]),
                                                *size_overrides(kind, size)],
                                   batch_size, root, tags["scalar"], device)
            natoms = int(cat.batch.natoms.sum())
            say(f"[steps] {kind} {size}: {batch_size} structures, {natoms} atoms, "
                f"{reps} interleaved repetitions")
            train = interleaved({"categorical": cat.train_step, "scalar": scalar.train_step},
                                reps, warmup=1, device=device)
            infer = interleaved({"categorical": cat.infer_step, "scalar": scalar.infer_step},
                                reps, warmup=1, device=device)
            row = {
                "model": kind, "size": size, "structures": batch_size, "atoms": natoms,
                "params_categorical": cat.num_params, "params_scalar": scalar.num_params,
                "train_ms": {k: median_ms(v) for k, v in train.items()},
                "infer_ms": {k: median_ms(v) for k, v in infer.items()},
                "train_ratio": Ratio.of(train["categorical"], train["scalar"]).__dict__,
                "infer_ratio": Ratio.of(infer["categorical"], infer["scalar"]).__dict__,
                "train_s": train, "infer_s": infer,
            }
            if memory:
                row["train_peak_mb"] = {"categorical": peak_mb(cat.train_step, device),
                                        "scalar": peak_mb(scalar.train_step, device)}
                row["infer_peak_mb"] = {"categorical": peak_mb(cat.infer_step, device),
                                        "scalar": peak_mb(scalar.infer_step, device)}
            say(f"  train {row['train_ms']['categorical']:.1f} vs "
                f"{row['train_ms']['scalar']:.1f} ms -> x{row['train_ratio']['median']:.3f}; "
                f"inference {row['infer_ms']['categorical']:.1f} vs "
                f"{row['infer_ms']['scalar']:.1f} ms -> x{row['infer_ratio']['median']:.3f}")
            rows.append(row)
            del cat, scalar
    return rows


def item_load(data: dict[str, Path], root: Path, reps: int, say: Callable[[str], None]
              ) -> dict[str, Any]:
    """Loading every training item: binning-space targets added on load vs fairchem's
    LmdbDataset."""
    import yaml
    from fairchem.core.datasets.lmdb_dataset import LmdbDataset

    from fairchem_categorical.fairchem1.dataset import CategoricalLmdbDataset

    cfg = yaml.safe_load((CONFIGS / MODELS["equiformer_v2"][0]).read_text())
    categorical = cfg["dataset"]["train"]["categorical"]
    plain_src = root / "copies" / "item_load_plain"
    shutil.copytree(data["train"], plain_src, dirs_exist_ok=True)
    plain = LmdbDataset({"src": str(plain_src)})
    cat = CategoricalLmdbDataset({"src": str(data["train"]), "categorical": categorical})
    n = len(plain)
    items = [plain[i] for i in range(n)]
    # the binning the trainer's loss path does, per batch of 8 (batches fresh each time)
    from fairchem.core.datasets import data_list_collater

    def load(ds: Any) -> Callable[[], None]:
        return lambda: [ds[i] for i in range(n)]

    def bin_only() -> None:
        for start in range(0, n, 8):
            cat.binner(data_list_collater(items[start:start + 8], otf_graph=True))

    def collate_only() -> None:
        for start in range(0, n, 8):
            data_list_collater(items[start:start + 8], otf_graph=True)

    say(f"[item load] {n} items, {reps} interleaved repetitions")
    times = interleaved({"categorical": load(cat), "plain": load(plain),
                         "collate_and_bin": bin_only, "collate": collate_only},
                        reps, warmup=1)
    times["binner"] = [b - c for b, c in zip(times["collate_and_bin"], times["collate"],
                                              strict=True)]
    return {
        "items": n, "us_per_item": {k: 1e6 * statistics.median(v) / n for k, v in times.items()},
        "load_ratio": Ratio.of(times["categorical"], times["plain"]).__dict__,
        "binner_share": Ratio.of(times["binner"], times["plain"]).__dict__,
        "what": "items as fairchem's LmdbDataset loads them; the binning (energy in the "
                "binning space, |F_i|, their HL-Gauss histograms) runs per batch of 8 in "
                "the trainer's loss path and is timed there (collation subtracted)",
    }


def run(args: Any, say: Callable[[str], None]) -> dict[str, Any]:
    root = Path(args.work or tempfile.mkdtemp(prefix="overhead_fc1_"))
    t0 = time.time()
    data = make_data(root, say, args.data)
    results: dict[str, Any] = {"line": LINE}
    if "steps" in args.sections:
        results["steps"] = steps(args.models, args.sizes, args.batch_size, args.reps,
                                 args.device, data, root, args.memory, say)
    if "load" in args.sections:
        results["item_load"] = item_load(data, root, max(args.reps, 5), say)
    for skipped in ("throughput", "profile"):
        if skipped in args.sections:
            say(f"[{skipped}] measured on the fairchem-core 2.x line only")
    results["seconds"] = time.time() - t0
    return results
