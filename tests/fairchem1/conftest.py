"""fairchem-core 1.10 adapter tests: collected only where that line is installed."""

from tests.reference import collected_only_on_line

collect_ignore_glob = collected_only_on_line(1)
