#!/usr/bin/env bash
# The prepared GPU check (about 8 minutes on one GPU): install what travels, run the gpu tests, then
# bench/gpu_check.py, whose markdown table is printed and written to $OUT/gpu_check.md when OUT is set.
#
#   bash bench/gpu_check.sh          # on a GPU machine (PyTorch with CUDA, transformers, peft, accelerate there)
#   bash bench/gpu_check.sh --cpu    # the rehearsal: tiny shapes on the CPU, about a minute (CI runs it)
#
# Packages the GPU machine lacks travel as wheels in .whl/ (ignored by git); this prepares them here:
#   bash bench/gpu_check.sh --prepare-wheels
set -euo pipefail
cd "$(dirname "$0")/.."
mode=gpu
case "${1:-}" in
  --cpu) mode=cpu ;;
  --prepare-wheels)
    # Python 3.12 manylinux wheels of what the device image (device/KINDS.md) lacks: pydantic and friends for
    # lorakit, TRL and datasets for the comparison, bitsandbytes (43 MB) for NF4; about 48 MB, under the 64 MiB
    # that travels.
    mkdir -p .whl
    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
      --platform manylinux2014_x86_64 -d .whl pydantic pydantic-core annotated-types typing-inspection tomli-w \
      trl datasets dill multiprocess bitsandbytes
    du -sh .whl
    exit 0 ;;
esac
if [ "$mode" = gpu ]; then
  if [ -d .whl ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH="/tmp/site:${PYTHONPATH:-}"
  fi
  export PYTHONPATH="$PWD/src:$PWD:${PYTHONPATH:-}"
  python3 -m pytest -q -p no:cacheprovider -m gpu tests/gpu || echo "| gpu tests | FAILED | see the log above |"
fi
out=()
[ -n "${OUT:-}" ] && out=(--out "$OUT/gpu_check.md")
python3 bench/gpu_check.py $([ "$mode" = cpu ] && echo --cpu) "${out[@]}"
