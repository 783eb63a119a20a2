"""fairchem-core 2.x part of the overhead benchmark (run through ``overhead.py``).

Every model pair is built from the shipped configs by fairchem's own Hydra composition
(``tests/fairchem2/checkpoints.compose``): the categorical config and its scalar twin
(``esen_scalar_conserving.yaml``, ``uma_scalar_conserving.yaml``: fairchem's
``MLP_EFS_Head``), the same backbone overrides and the same seed, so both carry the same
backbone weights; both see the same structures, collated by each run's own collater.

- training step: ``model(batch)`` in train mode (the heads take forces with
  ``create_graph``), fairchem's ``compute_loss`` over the config's tasks, ``backward``;
- inference: the model as fairchem's predict unit prepares it (eval, no parameter
  gradients), forward and forces;
- item load: the run's dataset with the binning transform vs fairchem's ``ase_db``;
- throughput and the uncertainty's cost: fairchem's ``MLIPPredictUnit`` on inference
  checkpoints of both models ("batch" settings), structures per second at several batch
  sizes, and a 5-member scalar ensemble (``ensemble.combine``) per structure.
"""

from __future__ import annotations

import copy
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
CONFIGS = REPO / "configs" / "fairchem2"
LINE = "fairchem-core 2.x"

#: model kind -> (categorical config, scalar config of the same backbone)
MODELS = {
    "esen": ("esen_categorical_conserving.yaml", "esen_scalar_conserving.yaml"),
    "uma": ("uma_categorical_conserving.yaml", "uma_scalar_conserving.yaml"),
}
MODEL_LABELS = {"esen": "eSEN (escn_md)", "uma": "UMA-MoE (escn_moe, 4 experts)"}
#: size -> (channels, lmax, layers); "cpu" is what the shipped configs use
SIZES = {
    "tiny": (16, 1, 2),
    "cpu": (32, 2, 2),
    "wide": (64, 2, 2),
    "paper": (128, 2, 2),
}


def size_overrides(size: str) -> list[str]:
    channels, lmax, layers = SIZES[size]
    return [f"backbone.sphere_channels={channels}", f"backbone.hidden_channels={channels}",
            f"backbone.edge_channels={channels}", f"backbone.lmax={lmax}",
            f"backbone.mmax={lmax}", f"backbone.num_layers={layers}"]

#: sizes measured by default, per model kind
DEFAULT_SIZES = {"esen": ["cpu", "wide", "paper"], "uma": ["cpu", "wide", "paper"]}


def size_label(size: str) -> str:
    channels, lmax, layers = SIZES[size]
    return f"{size} ({channels} ch, lmax {lmax}, {layers} layers)"


def _import_fairchem() -> None:
    import fairchem_categorical.fairchem2  # noqa: F401  (registers heads, loss, dataset)


def make_data(root: Path, say: Callable[[str], None], given: Path | None = None
              ) -> dict[str, Path]:
    """The embedded set (10 systems), or the train/val/test folders of ``given`` (ASE-LMDB)."""
    from fairchem_categorical.data import make_dataset

    if given is not None:
        say(f"[data] the dataset in {given}")
        return {name: given / name for name in ("train", "val", "test")}

    say(f"[data] embedded adsorbate+slab structures in {root}")
    return make_dataset(root / "data", n_systems=10, seed=0, overwrite=True)


def _data_overrides(data: dict[str, Path], root: Path) -> list[str]:
    return [f"train_data={data['train']}", f"val_data={data['val']}",
            f"job.run_dir={root / 'runs'}"]


def _spread(n: int, k: int) -> list[int]:
    """k indices spread over range(n): structures of several systems, not one relaxation."""
    return sorted({int(round(x)) for x in np.linspace(0, n - 1, k)})


@dataclass
class Variant:
    """One model (categorical or scalar), its batch and its two timed calls."""

    name: str
    model: torch.nn.Module
    tasks: list
    batch: Any
    infer_model: torch.nn.Module

    @classmethod
    def build(cls, config: str, overrides: list[str], batch_size: int, device: str,
              seed: int = 0) -> Variant:
        from tests.fairchem2.checkpoints import compose

        composed = compose(CONFIGS / config, overrides, seed=seed)
        dataset, collate = composed.dataset(), composed.collater()
        batch = collate([dataset[i] for i in _spread(len(dataset), batch_size)]).to(device)
        model = composed.model.to(device)
        infer = copy.deepcopy(model).eval().requires_grad_(False)
        return cls(config, model, composed.tasks, batch, infer)

    def train_step(self) -> None:
        from fairchem.core.units.mlip_unit.mlip_unit import compute_loss

        self.model.train()
        self.batch.pos.grad = None
        pred = self.model(self.batch)
        loss = sum(compute_loss(self.tasks, pred, self.batch).values())
        self.model.zero_grad(set_to_none=True)
        loss.backward()

    def infer_step(self) -> torch.Tensor:
        pred = self.infer_model(self.batch)
        return pred["forces"]["forces"].detach()

    @property
    def num_params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())


def steps(kinds: Sequence[str], sizes: Sequence[str] | None, batch_size: int, reps: int,
          device: str, data: dict[str, Path], root: Path, memory: bool,
          say: Callable[[str], None]) -> list[dict[str, Any]]:
    """Training step and inference, categorical vs scalar, per model kind and size."""
    _import_fairchem()
    rows = []
    for kind in kinds:
        cat_cfg, scalar_cfg = MODELS[kind]
        for size in sizes or DEFAULT_SIZES[kind]:
            overrides = [*_data_overrides(data, root), *size_overrides(size)]
            cat = Variant.build(cat_cfg, overrides, batch_size, device)
            scalar = Variant.build(scalar_cfg, overrides, batch_size, device)
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


def _find_binner(dataset: Any) -> Any:
    """The TargetBinner inside fairchem's concat/subset wrappers."""
    seen = dataset
    for _ in range(5):
        if hasattr(seen, "binner"):
            return seen.binner
        seen = seen.datasets[0] if hasattr(seen, "datasets") else getattr(seen, "dataset", None)
    raise RuntimeError("no TargetBinner found in the categorical dataset")


def item_load(data: dict[str, Path], root: Path, reps: int,
              say: Callable[[str], None]) -> dict[str, Any]:
    """Loading every training item: with the binning transform vs fairchem's ase_db."""
    from tests.fairchem2.checkpoints import compose

    _import_fairchem()
    overrides = [*_data_overrides(data, root), *size_overrides("tiny")]
    cat_ds = compose(CONFIGS / MODELS["esen"][0], overrides).dataset()
    plain_ds = compose(CONFIGS / MODELS["esen"][1], overrides).dataset()
    n = len(plain_ds)
    binner = _find_binner(cat_ds)
    items = [plain_ds[i] for i in range(n)]

    def load(ds: Any) -> Callable[[], None]:
        return lambda: [ds[i] for i in range(n)]

    def bin_only() -> None:
        for i, item in enumerate(items):
            binner(item, i)

    say(f"[item load] {n} items, {reps} interleaved repetitions")
    times = interleaved({"categorical": load(cat_ds), "plain": load(plain_ds),
                         "binner": bin_only}, reps, warmup=1)
    per_item = {k: 1e6 * statistics.median(v) / n for k, v in times.items()}
    return {
        "items": n, "us_per_item": per_item,
        "load_ratio": Ratio.of(times["categorical"], times["plain"]).__dict__,
        "binner_share": Ratio.of(times["binner"], times["plain"]).__dict__,
        "what": "energy_categorical (binning-space scalar) + force_magnitude per item; "
                "histograms are encoded in the loss",
    }


# -- predict units: throughput and the uncertainty's cost -----------------------------


def _scalar_twins(categorical_ckpt: Path, members: int, root: Path, data: dict[str, Path],
                  ) -> list[Path]:
    """Scalar inference checkpoints with the categorical checkpoint's backbone config."""
    import hydra
    from fairchem.core.units.mlip_unit.api.inference import MLIPInferenceCheckpoint
    from omegaconf import OmegaConf

    from tests.fairchem2.checkpoints import compose

    ckpt = torch.load(categorical_ckpt, map_location="cpu", weights_only=False)
    scalar = compose(CONFIGS / "esen_scalar_conserving.yaml", _data_overrides(data, root))
    tasks_config = OmegaConf.to_container(scalar.unit.tasks, resolve=True)
    model_config = copy.deepcopy(ckpt.model_config)
    model_config["heads"] = {"efs": {"module": "fairchem.core.models.uma.escn_md.MLP_EFS_Head"}}
    paths = []
    for seed in range(members):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = hydra.utils.instantiate(model_config)
        ema = torch.optim.swa_utils.AveragedModel(model)
        path = root / "checkpoints" / f"scalar_seed{seed}.pt"
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(MLIPInferenceCheckpoint(model_config, model.state_dict(), ema.state_dict(),
                                           tasks_config), path)
        paths.append(path)
    return paths


def throughput(kind: str, size: str, batch_sizes: Sequence[int], n_structures: int,
               members: int, reps: int, device: str, data: dict[str, Path], root: Path,
               checkpoint: Path | None, say: Callable[[str], None]) -> dict[str, Any]:
    """Structures per second through fairchem's predict unit, categorical vs scalar vs
    an ensemble of ``members`` scalar models (per structure, records included)."""
    from fairchem.core.datasets.atomic_data import atomicdata_list_to_batch
    from fairchem.core.units.mlip_unit.api.inference import guess_inference_settings
    from fairchem.core.units.mlip_unit.predict import MLIPPredictUnit

    from fairchem_categorical.data import read_frames
    from fairchem_categorical.ensemble import combine
    from fairchem_categorical.fairchem2.predict import load_unit, predict_batch, to_data
    from fairchem_categorical.predictions import predict_frames
    from tests.fairchem2.checkpoints import compose, write_inference_checkpoint

    _import_fairchem()
    if checkpoint is None:
        overrides = [*_data_overrides(data, root), *size_overrides(size)]
        checkpoint = write_inference_checkpoint(compose(CONFIGS / MODELS[kind][0], overrides),
                                                root / "checkpoints" / "categorical.pt")
        source = f"{kind} {size_label(size)}, untrained weights"
    else:
        source = str(checkpoint)
    scalars = _scalar_twins(checkpoint, members, root, data)
    settings = guess_inference_settings("batch")
    cat_unit = load_unit(checkpoint, device=device, inference_settings="batch")
    dataset_name = cat_unit.energy_task.datasets[0]
    # fairchem's own predict unit for the scalar model; the ensemble's members go through
    # the same predict_batch as the categorical model (energies, forces, records)
    fairchem_scalar = MLIPPredictUnit(str(scalars[0]), device=device, inference_settings=settings)
    members_units = [load_unit(p, device=device, inference_settings="batch") for p in scalars]
    pool = read_frames([data["test"], data["val"]])
    frames = [pool[i] for i in _spread(len(pool), n_structures)]
    n = len(frames)

    def make_batch(chunk: Sequence) -> Any:
        return atomicdata_list_to_batch([to_data(a, dataset_name) for a in chunk])

    def categorical(b: int) -> Callable[[], None]:
        def run() -> None:
            for start in range(0, n, b):
                predict_batch(cat_unit, make_batch(frames[start:start + b]), start)
        return run

    def categorical_records(b: int) -> Callable[[], list]:
        return lambda: predict_frames(frames, b, make_batch,
                                      lambda batch, start: predict_batch(cat_unit, batch, start))

    def scalar_fairchem(b: int) -> Callable[[], None]:
        def run() -> None:
            for start in range(0, n, b):
                fairchem_scalar.predict(make_batch(frames[start:start + b]))
        return run

    def ensemble(b: int) -> Callable[[], list]:
        return lambda: combine([
            predict_frames(frames, b, make_batch,
                           lambda batch, start, u=u: predict_batch(u, batch, start))
            for u in members_units])

    extras = predict_batch(cat_unit, make_batch(frames[:2]), 0)[1]
    rows = []
    for b in batch_sizes:
        say(f"[throughput] batch size {b}: {n} structures, {reps} interleaved repetitions")
        times = interleaved({"categorical": categorical(b), "scalar": scalar_fairchem(b),
                             "categorical_records": categorical_records(b),
                             "ensemble": ensemble(b)}, reps, warmup=1, device=device)
        med = {k: statistics.median(v) for k, v in times.items()}
        rows.append({
            "batch_size": b,
            "structures_per_s": {k: n / v for k, v in med.items()},
            "ms_per_structure": {k: 1000 * v / n for k, v in med.items()},
            "categorical_vs_scalar": Ratio.of(times["categorical"], times["scalar"]).__dict__,
            "ensemble_vs_categorical": Ratio.of(times["ensemble"],
                                                times["categorical_records"]).__dict__,
        })
        say(f"  {rows[-1]['structures_per_s']['categorical']:.1f} vs "
            f"{rows[-1]['structures_per_s']['scalar']:.1f} structures/s (scalar), ensemble "
            f"{rows[-1]['structures_per_s']['ensemble']:.1f}")
    return {
        "model": source, "structures": n, "members": members, "settings": "batch",
        "categorical_outputs": sorted(extras),
        "epistemic": "energy_uncertainty" in extras,
        "rows": rows,
    }


def profile(kind: str, size: str, batch_size: int, device: str, data: dict[str, Path],
            root: Path, steps_per_profile: int = 3, rounds_per_model: int = 3, top: int = 15
            ) -> dict[str, Any]:
    """torch.profiler over training and inference steps: where the extra time goes.

    The backbone runs the same ops on the same shapes the same number of times in both
    models, so (op, input shapes) pairs whose call count differs are the heads' (and their
    losses'); their extra calls times the categorical model's mean self time per call
    estimate what the categorical head adds, free of the run-to-run noise in the
    backbone's share.
    """
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    _import_fairchem()
    overrides = [*_data_overrides(data, root), *size_overrides(size)]
    variants = {"categorical": Variant.build(MODELS[kind][0], overrides, batch_size, device),
                "scalar": Variant.build(MODELS[kind][1], overrides, batch_size, device)}
    activities = [ProfilerActivity.CPU]
    if device.startswith("cuda"):
        activities.append(ProfilerActivity.CUDA)
    out: dict[str, Any] = {"model": kind, "size": size, "steps": steps_per_profile,
                           "rounds": rounds_per_model}
    for step in ("train_step", "infer_step"):
        stats: dict[str, dict[str, tuple[float, float]]] = {}
        for name, variant in variants.items():
            getattr(variant, step)()  # warm up outside the profile
            rounds = []
            for _ in range(rounds_per_model):
                with torch_profile(activities=activities, record_shapes=True) as prof:
                    for _ in range(steps_per_profile):
                        getattr(variant, step)()
                # (op, input shapes) -> (calls per step, self CPU ms per step)
                rounds.append({f"{e.key} {e.input_shapes}": (
                    e.count / steps_per_profile,
                    e.self_cpu_time_total / 1000.0 / steps_per_profile)
                    for e in prof.key_averages(group_by_input_shape=True)})
            # the least time each call took over the rounds: other processes' preemptions
            # land on a few calls of one round, not on the same calls every round
            stats[name] = {k: (rounds[0][k][0], min(r[k][1] for r in rounds if k in r))
                           for k in rounds[0]}
        cat, sc = stats["categorical"], stats["scalar"]
        extra = []
        for op, (calls, ms) in cat.items():
            more = calls - sc.get(op, (0.0, 0.0))[0]
            if more > 0:
                extra.append((op, more, ms / calls * more))
        extra.sort(key=lambda row: -row[2])
        out[step] = {
            "total_self_ms": {k: sum(ms for _, ms in v.values()) for k, v in stats.items()},
            "extra_ms": sum(row[2] for row in extra),
            "fewer_calls": sorted(((op, calls - cat.get(op, (0.0, 0.0))[0])
                                   for op, (calls, _) in sc.items()
                                   if calls > cat.get(op, (0.0, 0.0))[0]),
                                  key=lambda row: -row[1])[:top],
            "extra_calls": extra[:top],
        }
    return out


def run(args: Any, say: Callable[[str], None]) -> dict[str, Any]:
    root = Path(args.work or tempfile.mkdtemp(prefix="overhead_fc2_"))
    t0 = time.time()
    data = make_data(root, say, args.data)
    results: dict[str, Any] = {"line": LINE}
    if "steps" in args.sections:
        results["steps"] = steps(args.models, args.sizes, args.batch_size, args.reps,
                                 args.device, data, root, args.memory, say)
    if "load" in args.sections:
        results["item_load"] = item_load(data, root, max(args.reps, 5), say)
    if "throughput" in args.sections:
        results["throughput"] = throughput(
            "esen", args.throughput_size, args.throughput_batch_sizes, args.structures,
            args.members, max(3, args.reps // 2), args.device, data, root, args.checkpoint, say)
    if "profile" in args.sections:
        results["profile"] = [profile(kind, size, args.batch_size, args.device, data, root)
                              for kind in args.models for size in args.profile_sizes]
    results["seconds"] = time.time() - t0
    return results
