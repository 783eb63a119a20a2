"""The imported fairchem-core 1.10 adapter modules satisfy every role's protocol."""

from __future__ import annotations

import inspect

import pytest

from fairchem_categorical.adapters import ROLES
from fairchem_categorical.app.lines import LINES
from tests.adapter_contract import check


@pytest.mark.parametrize("role", sorted(ROLES))
def test_the_imported_adapter_offers_its_role(role: str) -> None:
    module = LINES[1].adapter(role)
    assert check(role, lambda name: inspect.signature(getattr(module, name))
                 if hasattr(module, name) else None, "fairchem1") == []
