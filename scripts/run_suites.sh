#!/usr/bin/env bash
# Run the test suite in each environment given, whatever the others gave; print every
# suite's closing line at the end; exit non-zero if any suite failed.
#   scripts/run_suites.sh "-m 'not slow'" .venv .venv-fairchem1
set -uo pipefail
args="$1"; shift  # extra pytest arguments, e.g. "-m 'not slow'"
summaries=(); failed=0
for venv in "$@"; do
    log="$(mktemp)"
    echo "== test suite in $venv =="
    # shellcheck disable=SC2086
    eval "\"$venv/bin/python\" -m pytest -q -p no:cacheprovider $args" 2>&1 | tee "$log"
    code=${PIPESTATUS[0]}
    last="$(grep -E '(passed|failed|error|no tests ran)' "$log" | tail -n 1)"
    summaries+=("$venv (exit $code): ${last:-no summary line}")
    [ "$code" -eq 0 ] || failed=1
    rm -f "$log"
done
echo "== summary =="
printf '%s\n' "${summaries[@]}"
exit "$failed"
