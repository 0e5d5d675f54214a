#!/usr/bin/env bash
# The GPU check (bench/gpu_check.py) on the machine a task may be lent: one GPU, no network, its own
# python3 with torch + CUDA, transformers and peft, but no pydantic (which our recipes need) and no vLLM.
# Nothing is installed from a registry there: pydantic's wheels are fetched here and carried.
#
#   bench/gpu_check.sh --fetch-wheels   # here, where PyPI is reachable: the missing wheels into .whl/ (~2 MB,
#                                       # pinned in constraints.txt, for the lent machine's Python 3.12)
#   bench/gpu_check.sh                  # there, with .whl carried: writes $OUT/gpu_check.json when $OUT is set
#                                       # (the device tool's folder), else bench/results/gpu_check.json
#   bench/gpu_check.sh --cpu-smoke --out /tmp/gpu_check.json   # anywhere: every part at toy sizes on the CPU
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELS=${WHEELS:-.whl}
PY=${PYTHON:-python3}
if [ "${1:-}" = "--fetch-wheels" ]; then
  pins=$(grep -iE '^(pydantic|pydantic_core|annotated[-_]types|typing[-_]inspection)==' constraints.txt)
  # shellcheck disable=SC2086
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version "${GPU_PYTHON_VERSION:-3.12}" --implementation cp \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 -d "$WHEELS" $pins
  du -sh "$WHEELS"
  exit 0
fi
if ! "$PY" -c "import pydantic" >/dev/null 2>&1; then
  if ! ls "$WHEELS"/*.whl >/dev/null 2>&1; then
    echo "gpu_check: $PY has no pydantic and $WHEELS/ holds no wheels: run bench/gpu_check.sh --fetch-wheels where PyPI is reachable and carry $WHEELS" >&2
    exit 2
  fi
  SITE=$(mktemp -d)
  for wheel in "$WHEELS"/*.whl; do "$PY" -m zipfile -e "$wheel" "$SITE"; done  # a wheel is a zip: no pip needed
  export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
args=("$@")
if [ -n "${OUT:-}" ]; then args+=(--out "$OUT/gpu_check.json"); fi
if command -v nvidia-smi >/dev/null 2>&1; then nvidia-smi -L || true; fi
exec timeout "${GPU_CHECK_TIMEOUT:-480}" "$PY" bench/gpu_check.py "${args[@]}"
