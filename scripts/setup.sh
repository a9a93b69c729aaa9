#!/usr/bin/env bash
# Set up (or update) the project's virtual environment in .venv.
#   scripts/setup.sh         what the apps need
#   scripts/setup.sh --dev   plus what the tests need (transformers, pytest, selenium) and, on a
#                            Debian/Ubuntu machine as root, Chromium for the browser tests
set -euo pipefail
cd "$(dirname "$0")/.."

dev=0
[[ "${1:-}" == "--dev" ]] && dev=1

PYTHON="${PYTHON:-python3}"
if [[ ! -x .venv/bin/python ]]; then
  "$PYTHON" -m venv .venv
fi
py=.venv/bin/python
"$py" -m pip install --quiet --upgrade pip

# PyTorch first and pinned, so the resolver never picks another build. On Linux, PyPI's torch is
# a CUDA build (about 3 GB with its nvidia-* wheels); a Linux machine without an NVIDIA GPU gets
# the CPU build (about 200 MB) from PyTorch's CPU wheel index instead, if that can be reached.
# TORCH_SPEC picks another version or build, TORCH_INDEX another index ("" = the configured one,
# PyPI), e.g. TORCH_INDEX=https://download.pytorch.org/whl/cu126 for CUDA 12.6 wheels.
torch_spec="${TORCH_SPEC:-torch==2.13.0}"
if [[ -z "${TORCH_INDEX+set}" ]]; then
  TORCH_INDEX=""
  if [[ $(uname -s) == Linux ]] && ! command -v nvidia-smi >/dev/null; then
    TORCH_INDEX=https://download.pytorch.org/whl/cpu
  fi
fi
if ! "$py" -c "import torch" 2>/dev/null; then
  if [[ -n $TORCH_INDEX ]] && "$py" - "$TORCH_INDEX/torch/" 2>/dev/null <<'PROBE'
import sys, urllib.request
urllib.request.urlopen(sys.argv[1], timeout=20)
PROBE
  then
    echo "installing $torch_spec from $TORCH_INDEX"
    "$py" -m pip install --quiet --index-url "$TORCH_INDEX" "$torch_spec"
  else
    if [[ -n $TORCH_INDEX ]]; then
      echo "note: $TORCH_INDEX cannot be reached; installing $torch_spec from the configured" \
           "package index instead (on Linux, PyPI's is the ~3 GB CUDA build)" >&2
    fi
    "$py" -m pip install --quiet "$torch_spec"
  fi
fi

if [[ $dev == 1 ]]; then
  "$py" -m pip install --quiet -r requirements-dev.txt
  # Debian packages some tests need: Chromium for the browser tests, the Python docs HTML for
  # the corpus-rebuild test (data/ is built from it).
  if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null \
      || [[ ! -d /usr/share/doc/python3.11/html ]]; then
    if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
      echo "installing Debian's chromium, chromium-driver and python3.11-doc for the tests"
      apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver \
        python3.11-doc >/dev/null
    else
      echo "note: chromium, chromium-driver or python3.11-doc is missing; the tests that need" \
           "them skip (Debian/Ubuntu: apt-get install chromium chromium-driver python3.11-doc)" >&2
    fi
  fi
else
  "$py" -m pip install --quiet -r requirements.txt
fi
echo "environment ready: .venv ($("$py" -c 'import torch; print("torch", torch.__version__)'))"
