"""The vLLM engine: what a CPU can check (the mapping of vLLM's outputs, the recipe keys, the clear error
without vLLM, the GPU check script in its CPU mode); sampling itself only where CUDA and vLLM exist."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from selfimprove.config import ConfigError, RLRecipe, load_recipe
from selfimprove.policy.vllm_engine import completion_from_vllm

ROOT = Path(__file__).resolve().parent.parent


def _lp(value: float) -> SimpleNamespace:
    return SimpleNamespace(logprob=value)


def test_a_vllm_output_becomes_a_completion() -> None:
    out = SimpleNamespace(token_ids=[5, 9, 2], text="ab", logprobs=[{5: _lp(-0.5)}, {9: _lp(-1.5), 3: _lp(-0.1)}, {2: _lp(-0.2)}],
                          finish_reason="stop", stop_reason=None)
    c = completion_from_vllm(3, [1, 2], out, version=7)
    assert (c.prompt_index, c.prompt_ids, c.token_ids, c.text, c.version) == (3, [1, 2], [5, 9, 2], "ab", 7)
    assert c.logprobs == [-0.5, -1.5, -0.2] and c.finish_reason == "eos"
    stopped = SimpleNamespace(token_ids=[5], text="a", logprobs=[{5: _lp(-0.5)}], finish_reason="stop", stop_reason="\n")
    assert completion_from_vllm(0, [1], stopped, 0).finish_reason == "stop"
    cut = SimpleNamespace(token_ids=[5], text="a", logprobs=None, finish_reason="length", stop_reason=None)
    assert completion_from_vllm(0, [1], cut, 0).finish_reason == "length" and completion_from_vllm(0, [1], cut, 0).logprobs == [0.0]


def test_engine_options_belong_to_their_kind() -> None:
    recipe = load_recipe(RLRecipe, None, ["run_dir=x", "engine.kind=vllm", "engine.gpu_memory_utilization=0.4", "engine.sleep=true"])
    assert recipe.engine.options() == {"gpu_memory_utilization": 0.4, "sleep": True}
    with pytest.raises(ConfigError, match="options of engine.kind ray, not vllm"):
        load_recipe(RLRecipe, None, ["run_dir=x", "engine.kind=vllm", "engine.workers=4"])


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without vLLM")
def test_without_vllm_the_engine_says_how_to_get_it() -> None:
    from selfimprove.policy.load import load_engine

    try:
        import vllm  # noqa: F401
    except ImportError:
        with pytest.raises(ValueError, match=r"pip install -e '.\[vllm\]'"):
            load_engine("vllm", "tiny:small")


def test_the_gpu_check_runs_its_cpu_part_and_the_shell_script_parses() -> None:
    assert subprocess.run(["bash", "-n", str(ROOT / "bench" / "gpu_check.sh")]).returncode == 0
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--cpu-smoke"], capture_output=True, text=True,
                          timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1].startswith("vllm_tok_s=nan hf_tok_s=")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="vLLM needs CUDA")
def test_vllm_samples_with_the_learners_logprobs(small_model_dir: Path) -> None:
    pytest.importorskip("vllm")
    from selfimprove.policy.base import SamplingParams
    from selfimprove.policy.load import load_hf
    from selfimprove.policy.vllm_engine import VLLMEngine

    engine = VLLMEngine(load_hf(str(small_model_dir), device="cuda", dtype="float32"), dtype="float32")
    gap = engine.logprob_gap(["3 4 -> 7:", "9 2 -> 11:"], SamplingParams(n=2, temperature=1.0, max_new_tokens=8))
    assert gap["tokens"] > 0 and gap["max_abs_logprob_gap"] < 1e-2
    engine.close()
