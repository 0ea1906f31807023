#!/usr/bin/env bash
# The one-shot GPU check: bash benchmarks/gpu_check.sh [--dry-run] [--budget-s 510] [--out DIR]
# Runs from the repository root with it on PYTHONPATH; the logic is in benchmarks/gpu_check.py.
# PYTHON picks the interpreter (default: python, else python3).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec "${PYTHON:-$(command -v python || command -v python3)}" benchmarks/gpu_check.py "$@"
