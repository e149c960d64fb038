#!/usr/bin/env bash
# The wheels a GPU session carries for the real sweep (Ray Tune, MLflow, Optuna for the
# box's Python 3.12), into .whl/ (ignored by git), under one call's 64 MiB; needs PyPI.
#   bash bench/gpu_wheels.sh            # then: run `bash bench/gpu_all.sh` with carry [".whl"]
# What is downloaded, cut out and why: bench/gpu_wheels.py.
set -euo pipefail
cd "$(dirname "$0")/.."
exec python bench/gpu_wheels.py --dir .whl "$@"
