#!/usr/bin/env bash
# Set up the environment CI and developers use: `bash scripts/setup.sh`.
#
# Creates .venv with CPython 3.11 (reused when it exists), installs requirements/cpu.lock
# hash-checked and without resolving anything (--no-deps: the lock is complete), then the
# repro package in editable mode, again without dependencies, so the lock's pins stand.
# The build backend (requirements/build.lock) goes in first, so that the lock's two sdists
# build against it (--no-build-isolation) rather than against setuptools fetched unhashed.
# Afterwards: .venv/bin/python -m pytest -q, .venv/bin/repro --help.
#
# Environment: PYTHON (default python3, must be 3.11), VENV (default .venv).
# Outside the project's machines, torch 2.13.0+cpu comes from PyTorch's CPU index:
#   PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu bash scripts/setup.sh
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
python=${PYTHON:-python3}
venv=${VENV:-.venv}

if ! "$python" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
  echo "setup: requirements/cpu.lock is for CPython 3.11, but $python is" \
       "$("$python" -V 2>&1 || echo missing); set PYTHON=python3.11" >&2
  exit 2
fi
if [[ ! -x "$venv/bin/python" ]]; then
  "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
  --require-hashes --no-deps --only-binary :all: -r requirements/build.lock
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
  --require-hashes --no-deps --no-build-isolation -r requirements/cpu.lock
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
  --no-deps --no-build-isolation -e .
"$venv/bin/python" -m pip check
echo "setup: $venv ready ($("$venv/bin/python" -V), $(grep -c '^[a-z0-9]' requirements/cpu.lock) locked packages + repro)"
