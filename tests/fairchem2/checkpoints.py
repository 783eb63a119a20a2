"""A fairchem-core 2.x config's model and tasks without training, and its inference checkpoint.

Scaffolding for the tests and the benchmarks (not shipped in the package).

fairchem builds the model, the tasks and the datasets of a ``fairchem -c CONFIG`` run from
one composed Hydra config; ``compose`` does the same composition (fairchem's own
``get_hydra_config_from_yaml``), so a benchmark or a test gets exactly the objects a run
would train, and ``write_inference_checkpoint`` saves a model as fairchem's trainer saves
its ``inference_ckpt.pt`` (config, weights, EMA weights, tasks), which
``predict.load_unit`` and fairchem's ``MLIPPredictUnit`` load.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
import torch
from fairchem.core._cli import get_hydra_config_from_yaml
from fairchem.core.units.mlip_unit.api.inference import MLIPInferenceCheckpoint
from fairchem.core.units.mlip_unit.mlip_unit import Task
from omegaconf import DictConfig, OmegaConf


@dataclass
class Composed:
    """What one ``fairchem -c`` run would build: its canonical config, model and tasks."""

    config: DictConfig
    model: torch.nn.Module
    tasks: list[Task]

    @property
    def unit(self) -> DictConfig:
        return self.config.runner.train_eval_unit

    def dataset(self, split: str = "train") -> Any:
        """The run's training (or ``"val"``) dataset, as fairchem instantiates it."""
        loader = self.config.runner.train_dataloader if split == "train" else \
            self.config.runner.eval_dataloader
        return hydra.utils.instantiate(loader.dataset)

    def collater(self) -> Any:
        return hydra.utils.instantiate(self.config.runner.train_dataloader.collate_fn)


def compose(config: str | Path, overrides: list[str] | None = None, seed: int = 0
            ) -> Composed:
    """Compose ``config`` with Hydra ``overrides`` as ``fairchem -c`` does; build model, tasks.

    The model is built under ``torch.manual_seed(seed)`` on a forked RNG, so two configs
    that share a backbone get the same backbone weights.
    """
    config = Path(config)
    if not config.is_file():
        raise FileNotFoundError(f"config not found: {config}")
    cfg = get_hydra_config_from_yaml(str(config), list(overrides or []))
    unit = cfg.runner.train_eval_unit
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = hydra.utils.instantiate(unit.model)
    return Composed(cfg, model, list(hydra.utils.instantiate(unit.tasks)))


def write_inference_checkpoint(composed: Composed, path: str | Path) -> Path:
    """Save ``composed.model`` as an inference checkpoint (its weights double as EMA)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = composed.model
    ema = torch.optim.swa_utils.AveragedModel(model)
    torch.save(MLIPInferenceCheckpoint(
        model_config=OmegaConf.to_container(composed.unit.model, resolve=True),
        model_state_dict=model.state_dict(),
        ema_state_dict=ema.state_dict(),
        tasks_config=OmegaConf.to_container(composed.unit.tasks, resolve=True),
    ), path)
    return path
