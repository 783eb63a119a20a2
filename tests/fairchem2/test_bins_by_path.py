"""Plain ``fairchem -c`` takes a bins file from anywhere, with Hydra's own search path:
no copy into the config folder (issue 16, item 4).

The shipped configs take the bins as the ``bins`` config group (``- bins: embedded`` in
their defaults list), and a Hydra group override names an option, not a file
(``bins=/x/y.yaml`` is "Could not find 'bins//x/y.yaml'"). A folder named ``bins``
anywhere becomes a source of options when its parent joins the search path:
``hydra.searchpath=[file:///abs/parent] bins=<file name without .yaml>``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from hydra.errors import MissingConfigException

from tests.conftest import CONFIGS
from tests.fairchem2.checkpoints import compose
from tests.fairchem2.helpers import TINY_OVERRIDES
from tests.reference import LEGACY

CONFIG = CONFIGS / "esen_categorical_conserving.yaml"


def _shifted_bins(folder: Path) -> tuple[Path, dict]:
    """The legacy bins with another support and other element references, in
    ``folder/bins/shifted.yaml``."""
    bins = yaml.safe_load((LEGACY / "fairchem2" / "bins.yaml").read_text())
    bins["support"].update(low=-3.0, high=5.0, num_bins=24)
    bins["energy"]["element_references"] = [r + 0.5 for r in
                                            bins["energy"]["element_references"]]
    path = folder / "bins" / "shifted.yaml"
    path.parent.mkdir(parents=True)
    path.write_text(yaml.safe_dump(bins))
    return path, bins


def _energy_edges(model) -> np.ndarray:
    edges = [b for name, b in model.named_buffers()
             if name.startswith("output_heads.energy") and name.endswith("edges")]
    assert edges, [n for n, _ in model.named_buffers()]
    return edges[0].double().numpy()


def test_a_bins_file_outside_the_config_folder_by_search_path(tmp_path) -> None:
    path, bins = _shifted_bins(tmp_path)
    composed = compose(CONFIG, [*TINY_OVERRIDES, f"hydra.searchpath=[file://{tmp_path}]",
                                f"bins={path.stem}"])
    heads = composed.unit.model.heads
    assert dict(heads.energy.support) == bins["support"]
    support = bins["support"]
    np.testing.assert_allclose(_energy_edges(composed.model),
                               np.linspace(support["low"], support["high"],
                                           support["num_bins"] + 1), atol=1e-6)
    assert list(heads.energy.energy.element_references) == \
        bins["energy"]["element_references"]
    # the embedded bins, without the override, are another support
    assert len(_energy_edges(compose(CONFIG, TINY_OVERRIDES).model)) != 25


def test_a_bins_path_as_the_group_value_is_not_an_option(tmp_path) -> None:
    path, _ = _shifted_bins(tmp_path)
    with pytest.raises(MissingConfigException, match="bins"):
        compose(CONFIG, [*TINY_OVERRIDES, f"bins={path}"])
