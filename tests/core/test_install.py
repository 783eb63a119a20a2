"""A normal (non-editable) install carries the configs: ``demo``, ``train`` and
``active-learn`` find them through the package, from any working directory."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

CHECK = """
import sys
from pathlib import Path
import fairchem_categorical
from fairchem_categorical.app import lines
target = Path(sys.argv[1]).resolve()
assert Path(fairchem_categorical.__file__).resolve().is_relative_to(target), \\
    fairchem_categorical.__file__
for major, line in lines.LINES.items():
    for name in (line.categorical_config, line.scalar_config):
        path = line.configs / name
        assert path.is_file(), path
        assert path.resolve().is_relative_to(target), path
print(lines.LINES[2].configs / lines.LINES[2].categorical_config)
"""


@pytest.mark.slow
def test_a_non_editable_install_finds_its_configs(tmp_path: Path) -> None:
    # the sources a wheel is built from (a copy: the build leaves nothing in the checkout)
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(REPO / name, src / name)
    shutil.copytree(REPO / "fairchem_categorical", src / "fairchem_categorical",
                    ignore=shutil.ignore_patterns("__pycache__"))
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                    "--no-build-isolation", "--target", str(target), str(src)],
                   check=True, capture_output=True, text=True)
    shutil.rmtree(src)  # nothing may be read from the sources any more
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(target)}
    found = subprocess.run([sys.executable, "-c", CHECK, str(target)], cwd=elsewhere, env=env,
                           capture_output=True, text=True)
    assert found.returncode == 0, found.stderr[-2000:]
    config = Path(found.stdout.strip().splitlines()[-1])
    assert config.name == "esen_categorical_conserving.yaml"
    for group in ("backbone", "tasks", "bins"):  # what the config's defaults compose
        assert any((config.parent / group).iterdir()), group
    helped = subprocess.run([sys.executable, "-m", "fairchem_categorical.app.cli", "--help"],
                            cwd=elsewhere, env=env, capture_output=True, text=True)
    assert helped.returncode == 0 and "fit-uncertainty" in helped.stdout, helped.stderr[-2000:]
