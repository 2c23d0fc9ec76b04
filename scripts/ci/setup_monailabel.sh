#!/usr/bin/env bash
# Create .venv-monailabel: MONAI Label 0.8.5 on top of the main environment's torch and MONAI, for
# tests/test_monailabel.py. `pip install monailabel` would pull a CUDA torch, torchvision and sam2 into the main
# environment, so the venv sees the main site-packages (--system-site-packages) and gets, with --no-deps, only
# monailabel and the packages that `monailabel.tasks.{infer,train}.bundle` import and the main environment may
# lack. Idempotent: when the venv already holds these pins it is only checked.
set -euo pipefail
cd "$(dirname "$0")/../.."

PYTHON=${PYTHON:-python}
VENV=.venv-monailabel
PINS=(
    monailabel==0.8.5
    expiring-dict==1.1.2 sortedcontainers==2.4.0
    pynrrd==1.1.3
    scikit-image==0.26.0 lazy-loader==0.6
    shapely==2.2.0
    pydantic==2.13.4 pydantic-core==2.46.4 annotated-types==0.7.0 typing-inspection==0.4.2
    pydantic-settings==2.14.1 python-dotenv==1.2.2
)

if ! "$VENV/bin/python" -c "" 2>/dev/null; then
    rm -rf "$VENV"
    "$PYTHON" -m venv --system-site-packages "$VENV"
fi
if [[ "$(cat "$VENV/pins.txt" 2>/dev/null)" != "${PINS[*]}" ]]; then
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps "${PINS[@]}"
    echo "${PINS[*]}" >"$VENV/pins.txt"
fi

# The venv must import the main environment's torch (same file, same version) and MONAI Label's bundle tasks.
main_torch=$("$PYTHON" -c "import torch; print(torch.__file__, torch.__version__)")
"$VENV/bin/python" - "$main_torch" <<'EOF'
import sys

import torch

sys.path.insert(0, "scripts/ci")
from monailabel_driver import stand_in_for_torchvision

venv_torch = f"{torch.__file__} {torch.__version__}"
if venv_torch != sys.argv[1]:
    sys.exit(f"the venv's torch ({venv_torch}) is not the main environment's ({sys.argv[1]})")
stand_in_for_torchvision()
import monailabel.tasks.infer.bundle, monailabel.tasks.train.bundle  # noqa: E401,F401

print(f"{sys.prefix}: monailabel {__import__('monailabel').__version__}, torch {torch.__version__}")
EOF
