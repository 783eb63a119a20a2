"""End-to-end runs through each line's own entry point (all marked ``slow``): each file
is collected only where its line is installed."""

from tests.reference import collected_only_on_line

collect_ignore_glob = (collected_only_on_line(1, "test_fairchem1*.py")
                       + collected_only_on_line(2, "test_fairchem2*.py"))
