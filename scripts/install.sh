#!/usr/bin/env bash
# Installs lcm-plugin into the active Python (a venv or the system Python), lean enough for a 2-core CI machine.
#
#   bash scripts/install.sh           the package, the toy world and the demo (torch 2.13.0, CPU build)
#   bash scripts/install.sh --tests   everything the tests import, plus the host test beds where they exist:
#                                     ComfyUI's requirements, Debian's chromium and Playwright for the browser tests
#
# torch: a plain `pip install torch` pulls several GB of CUDA. The demo takes the 2.13.0 CPU wheel. The tests take
# torch 2.14.1 + torchvision 0.29.1 instead, because ComfyUI needs torchvision and on this platform only that pair
# matches (PyPI's torchvision does not load beside the 2.13.0 CPU wheel).
#
# Host test beds (found as the tests find them): LCM_PLUGIN_COMFYUI_PATH, else ../shared/comfyui/ComfyUI.
set -euo pipefail
cd "$(dirname "$0")/.."
mode="${1:-}"
case "$mode" in
  "" | --tests) ;;
  *) echo "usage: bash scripts/install.sh [--tests]" >&2; exit 2 ;;
esac
pip_install() { python -m pip install -q --disable-pip-version-check "$@"; }

if [ "$mode" = "--tests" ]; then
  pip_install "torch==2.14.1" "torchvision==0.29.1"
  pip_install -e ".[dev]"
  # k-diffusion (PyPI 0.1.1.post1 = the sampling.py/external.py A1111 pins) is only a test reference. Its declared
  # dependencies include wandb and clip, which we neither need nor want, so it is installed without them, plus
  # what k_diffusion/sampling.py and external.py really import (scipy: sampling.py imports scipy.integrate).
  pip_install --no-deps "k-diffusion==0.1.1.post1"
  pip_install "torchsde==0.2.6" "trampoline==0.1.2" "torchdiffeq==0.2.5" "scipy>=1.10"

  comfyui="${LCM_PLUGIN_COMFYUI_PATH:-../shared/comfyui/ComfyUI}"
  if [ -f "$comfyui/requirements.txt" ]; then
    # ComfyUI's own requirements, minus the torch family (pinned above) and torchaudio (only its audio nodes use it).
    reqs="$(mktemp)"
    grep -viE '^\s*(torch|torchvision|torchaudio)\s*([<>=!~].*)?$' "$comfyui/requirements.txt" > "$reqs"
    pip_install -r "$reqs"
    rm -f "$reqs"
    # The browser tests: Playwright's Python client driving Debian's chromium (Playwright's own browser download
    # is not reachable here, so it is never run).
    pip_install "playwright>=1.45"
    if ! command -v chromium > /dev/null 2>&1; then
      if [ "$(id -u)" = "0" ] && command -v apt-get > /dev/null 2>&1; then
        (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium > /dev/null) \
          || echo "install.sh: could not install chromium; the browser tests will skip" >&2
      else
        echo "install.sh: chromium not found (install Debian's chromium); the browser tests will skip" >&2
      fi
    fi
  else
    echo "install.sh: no ComfyUI checkout at $comfyui (set LCM_PLUGIN_COMFYUI_PATH); its tests will skip" >&2
  fi

  # --- A1111/Forge test bed (tests/forge) -------------------------------------------------------------------------
  # Forge runs in a venv of its own (~/.cache/lcm-plugin/forge-venv, or LCM_PLUGIN_FORGE_VENV; its 2024 pins relaxed as
  # recorded in tests/forge/forge_env.py), built once and reused while the pins are unchanged; only when a Forge
  # checkout is found (LCM_PLUGIN_FORGE_PATH, else ../shared/forge/stable-diffusion-webui-forge). ~4-6 min the first time.
  python -m tests.forge.forge_env
  # --- end A1111/Forge ---------------------------------------------------------------------------------------------
else
  pip_install "torch==2.13.0"
  pip_install -e ".[all]"
fi
