#!/usr/bin/env bash
# Create .venv-deploy for the MONAI Deploy application (scripts/deploy/app.py) and tests/test_deploy_app.py.
# torch==2.13.0 comes first so that pip takes the CPU build on disk. Idempotent: when the venv already holds
# requirements.txt's pins it is only checked. About 35 s and 1.5 GB on a fresh machine.
set -euo pipefail
cd "$(dirname "$0")/../.."

PYTHON=${PYTHON:-python}
VENV=.venv-deploy
REQUIREMENTS=scripts/deploy/requirements.txt

if ! "$VENV/bin/python" -c "" 2>/dev/null; then
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV"
fi
if ! cmp -s "$REQUIREMENTS" "$VENV/requirements.txt"; then
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check torch==2.13.0
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$REQUIREMENTS"
    cp "$REQUIREMENTS" "$VENV/requirements.txt"
fi
"$VENV/bin/python" -c "import holoscan, monai.deploy, torch; print(f'.venv-deploy: monai-deploy-app-sdk {monai.deploy.__version__}, holoscan {holoscan.__version__}, torch {torch.__version__}')"
