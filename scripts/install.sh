#!/usr/bin/env bash
# Installs lcm-plugin with everything its tests and demo need, lean enough for a 2-core CI machine.
# torch 2.13.0 is pinned because it is a CPU wheel (a plain `pip install torch` pulls several GB of CUDA).
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q --disable-pip-version-check "torch==2.13.0"
python -m pip install -q --disable-pip-version-check -e ".[dev]"
# k-diffusion (PyPI 0.1.1.post1 = the sampling.py/external.py A1111 pins) is only used by the tests as an
# independent reference. Its declared dependencies include torchvision and wandb, which we neither need nor
# want in CI, so it is installed without them plus the two modules sampling.py really imports.
python -m pip install -q --disable-pip-version-check --no-deps "k-diffusion==0.1.1.post1" "torchsde==0.2.6" "trampoline==0.1.2" "torchdiffeq==0.2.5"
