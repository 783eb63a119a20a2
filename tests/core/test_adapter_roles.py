"""Both lines' adapter modules offer what each role's protocol says (read from source, so
both lines are checked in any environment; tests/fairchem1 and tests/fairchem2 check the
imported modules too)."""

from __future__ import annotations

import inspect

import pytest

from fairchem_categorical.adapters import ROLES, TrainAdapter
from tests.adapter_contract import check, members, problems, source_signature


@pytest.mark.parametrize("line", ["fairchem1", "fairchem2"])
@pytest.mark.parametrize("role", sorted(ROLES))
def test_each_line_offers_each_role(line: str, role: str) -> None:
    assert check(role, lambda name: source_signature(f"{line}.{role}", name), line) == []


def test_the_app_asks_only_for_roles_with_a_protocol() -> None:
    """Every ``line.adapter("...")`` in the app names a role of ``adapters.ROLES``."""
    import re
    from pathlib import Path

    app = Path(__file__).resolve().parents[2] / "fairchem_categorical" / "app"
    asked = {m for p in app.rglob("*.py")
             for m in re.findall(r"adapter\(\"(\w+)\"\)", p.read_text())}
    assert asked and asked <= set(ROLES), asked - set(ROLES)


def test_the_check_finds_what_a_line_lacks() -> None:
    run = members(TrainAdapter)["run"]
    renamed = inspect.Signature([p.replace(name="cfg") if p.name == "config" else p
                                 for p in run.parameters.values()])
    assert problems(run, renamed, "x.train.run") == [
        "x.train.run: no parameter 'config'", "x.train.run: extra parameter 'cfg' without "
        "a default"]
    no_default = inspect.Signature([p.replace(default=inspect.Parameter.empty)
                                    for p in run.parameters.values()])
    assert problems(run, no_default, "x") == ["x: 'device' has no default"]
    assert check("train", lambda name: None, "x") == ["x.train.run: missing"]
    assert source_signature("fairchem2.train", "no_such_function") is None
