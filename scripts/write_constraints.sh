#!/usr/bin/env bash
# Record an environment's installed versions as a pip constraints file (not this package).
#   scripts/write_constraints.sh .venv constraints/fairchem2.txt
set -euo pipefail
venv="$1"; out="$2"
mkdir -p "$(dirname "$out")"
{
    echo "# The versions the test suite passed on in $venv ($("$venv/bin/python" --version)),"
    echo "# written by 'make constraints' on $(date -u +%Y-%m-%d). The Makefile installs with"
    echo "# 'pip install -c' this file; 'make test-latest' tests the newest releases instead."
    "$venv/bin/python" -m pip freeze --exclude-editable --local \
        | grep -v -i -E '^(fairchem-categorical|fairchem_categorical)[ =@]' \
        | sed -E 's/^(torch[a-z_-]*==[0-9.]+)\+[a-z0-9.]+$/\1/'
} > "$out"
echo "wrote $out ($(grep -vc '^#' "$out") packages)"
