#!/usr/bin/env bash
# Create the fairchem-core 1.10 environment (.venv-fairchem1 by default).
#
# fairchem-core 1.10 pins torch 2.4 and imports torch_scatter and torch_sparse, which have
# no CPU wheels on the package registry for torch 2.4: they are compiled here (slow the first
# time; pip caches the built wheels). On a GPU machine, install the torch-scatter/torch-sparse
# wheels that match your torch and CUDA instead of building them.
set -euo pipefail
VENV="${1:-.venv-fairchem1}"
PY="${PYTHON:-python3}"
# CONSTRAINTS: a pip constraints file (the versions the suite passed on); empty: newest
c=()
if [ -n "${CONSTRAINTS:-}" ]; then c=(-c "$CONSTRAINTS"); fi
start=$(date +%s)
step() { echo "[install_fairchem1 +$(( $(date +%s) - start ))s] $*"; }

step "creating $VENV"
"$PY" -m venv "$VENV"
pip="$VENV/bin/pip"
"$pip" install -q --upgrade pip "setuptools<81" wheel ninja
step "fairchem-core 1.10.0 with its torch 2.4 (numpy<2, scipy<1.15: fairchem 1.10 imports sph_harm)"
"$pip" install -q "${c[@]}" "fairchem-core==1.10.0" "numpy<2" "scipy<1.15"
step "torch-scatter and torch-sparse from source (CPU only; ~15 min on 2 cores the first time)"
FORCE_ONLY_CPU=1 MAX_JOBS="${MAX_JOBS:-2}" "$pip" install -q --no-build-isolation "${c[@]}" torch-scatter
FORCE_ONLY_CPU=1 MAX_JOBS="${MAX_JOBS:-2}" "$pip" install -q --no-build-isolation "${c[@]}" torch-sparse
step "this package with its test tools"
"$pip" install -q "${c[@]}" -e ".[fairchem1,test]"
"$VENV/bin/python" -c "import torch, torch_scatter, torch_sparse, fairchem.core; print('torch', torch.__version__)"
step "done"
