"""fairchem 2.x's screening adapter: the AdsorbML recipe's anomaly check, and the
fairchem-data-oc tools it shares with 1.10 (``tests/core/test_ocdata.py``)."""

from __future__ import annotations

from fairchem_categorical import ocdata
from fairchem_categorical.fairchem2 import screening as tools
from fairchem_categorical.screening import build_slab
from tests.core.test_ocdata import desorbed_case


def test_recipe_flags_the_desorbed_adsorbate_as_data_oc_does():
    initial, final, slab = desorbed_case(build_slab("Cu/fcc111"))
    assert tools.detect_anomaly(initial, initial.copy(), slab) == []
    assert "adsorbate_desorbed" in tools.detect_anomaly(initial, final, slab)
    assert tools.place is ocdata.place and tools.adsorbate_database is ocdata.adsorbate_database
