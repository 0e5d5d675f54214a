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
    cut = SimpleNamespace(token_ids=[5], text="a", logprobs=[{5: _lp(-0.5)}], finish_reason="length", stop_reason=None)
    assert completion_from_vllm(0, [1], cut, 0).finish_reason == "length"


def test_a_missing_logprob_is_an_error_not_zero() -> None:
    for logprobs in (None, [{9: _lp(-0.5)}], []):
        out = SimpleNamespace(token_ids=[5], text="a", logprobs=logprobs, finish_reason="length", stop_reason=None)
        with pytest.raises(ValueError, match="no log-prob for sampled token 5 at position 0"):
            completion_from_vllm(0, [1], out, 0)


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


BLOCK = """
import sys


class NotOnTheLentMachine:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"vllm", "ray", "datasets", "reasoning_gym", "math_verify"}:
            raise ImportError(f"{name} is not on the lent GPU machine")
        return None


sys.meta_path.insert(0, NotOnTheLentMachine())
"""


def test_the_gpu_check_runs_its_cpu_half_without_what_the_lent_machine_lacks(tmp_path: Path) -> None:
    """`bench/gpu_check.sh --cpu-smoke`: every part at toy sizes, with vLLM, Ray, datasets, reasoning_gym and
    math_verify unimportable (a sitecustomize blocks them), writing the one JSON."""
    import json
    import os

    (tmp_path / "sitecustomize.py").write_text(BLOCK)
    env = {**os.environ, "PYTHON": sys.executable, "PYTHONPATH": str(tmp_path), "OMP_NUM_THREADS": "2"}
    env.pop("OUT", None)
    done = subprocess.run(["bash", str(ROOT / "bench" / "gpu_check.sh"), "--cpu-smoke", "--out", str(tmp_path / "gc.json")],
                          capture_output=True, text=True, timeout=600, cwd=ROOT, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "gc.json").read_text())
    assert report["errors"] == {} and report["cpu_smoke"] and set(report["parts"]) == {"decode", "grpo", "rollout_gap", "vllm"}
    assert report["parts"]["vllm"]["status"].startswith("not installed")
    for model in ("tiny", "smollm2_135m_random"):
        assert report["parts"]["decode"][model]["ours_tok_s"] > 0 and report["parts"]["decode"][model]["hf_tok_s"] > 0
    assert report["parts"]["grpo"]["tiny"]["s_per_step"] > 0
    gap = report["parts"]["rollout_gap"]["tiny_sharpened"]
    assert gap["tokens"] > 0 and {"token/none", "token/tis", "token/mis", "sequence/tis"} <= set(gap)
    assert done.stdout.strip().splitlines()[-1].startswith("decode_speedup_tiny=")


def test_the_gpu_check_script_parses_and_needs_its_wheels_where_pydantic_is_missing(tmp_path: Path) -> None:
    import os

    assert subprocess.run(["bash", "-n", str(ROOT / "bench" / "gpu_check.sh")]).returncode == 0
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\nexit 1\n")  # a python without pydantic
    fake.chmod(0o755)
    done = subprocess.run(["bash", str(ROOT / "bench" / "gpu_check.sh")], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "PYTHON": str(fake), "WHEELS": str(tmp_path / "none")})
    assert done.returncode == 2 and "--fetch-wheels" in done.stderr


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


# ------------------------------------------------------------------------------ the engine on a vLLM double
FAKE = Path(__file__).resolve().parent / "fake_vllm"
PROMPTS = ["3 4 -> 7:", "9 2 -> 11:", "3 4 -> 7:"]  # the first and last are the same prompt


@pytest.fixture
def fake_vllm(monkeypatch: pytest.MonkeyPatch):
    """`import vllm` finds the test double; the engine's in-process setting is undone afterwards."""
    monkeypatch.syspath_prepend(str(FAKE))
    for name in [m for m in sys.modules if m == "vllm" or m.startswith("vllm.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.delenv("VLLM_ENABLE_V1_MULTIPROCESSING", raising=False)
    import vllm

    assert vllm.__version__.endswith("+fake")
    yield vllm
    for name in [m for m in sys.modules if m == "vllm" or m.startswith("vllm.")]:
        del sys.modules[name]


def _engine(model_dir: Path, **options):
    from selfimprove.policy.load import local_policy
    from selfimprove.policy.vllm_engine import VLLMEngine

    lora = options.pop("lora", None)
    torch.manual_seed(0)
    local = local_policy(str(model_dir), seed=0, lora=lora)
    return VLLMEngine(local, seed=3, dtype="float32", **options)


def _sharpen(policy) -> None:
    with torch.no_grad():
        for p in policy.module.parameters():
            p.add_(0.3 * torch.randn_like(p))


def test_duplicate_prompts_in_one_call_get_their_own_samples(fake_vllm, small_model_dir: Path) -> None:
    from selfimprove.policy.base import SamplingParams

    engine = _engine(small_model_dir)
    out = engine.generate(PROMPTS, SamplingParams(n=2, temperature=1.0, max_new_tokens=12))
    first, last = [c.token_ids for c in out[0:2]], [c.token_ids for c in out[4:6]]
    assert first != last  # vLLM seeds sample k of a request with seed + k: one seed per call would repeat them
    assert first[0] != first[1]
    again = _engine(small_model_dir)
    assert [c.token_ids for c in again.generate(PROMPTS, SamplingParams(n=2, temperature=1.0, max_new_tokens=12))] == \
        [c.token_ids for c in out]  # reproducible: (seed, call, prompt index)
    engine.close()
    again.close()


def test_one_seed_per_call_would_have_repeated_duplicate_prompts(fake_vllm, small_model_dir: Path) -> None:
    """The double does what vLLM does with one seed for every prompt: the test above can fail."""
    engine = _engine(small_model_dir)
    ids = [engine.encode_prompt(p) for p in PROMPTS]
    outputs = engine.llm.generate([{"prompt_token_ids": i} for i in ids],
                                  fake_vllm.SamplingParams(n=2, temperature=1.0, max_tokens=12, logprobs=0, seed=11))
    assert [o.token_ids for o in outputs[0].outputs] == [o.token_ids for o in outputs[2].outputs]
    engine.close()


def test_the_behaviour_logprobs_are_the_processed_ones(fake_vllm, small_model_dir: Path) -> None:
    from selfimprove.policy.base import SamplingParams

    engine = _engine(small_model_dir)
    _sharpen(engine.local)
    engine.load_weights(engine.local.weight_state(), 1)
    params = SamplingParams(n=2, temperature=0.5, max_new_tokens=8)
    out = engine.generate(PROMPTS[:2], params)
    learner = engine.local.logprobs([c.prompt_ids for c in out], [c.token_ids for c in out], temperature=0.5)
    raw = engine.local.logprobs([c.prompt_ids for c in out], [c.token_ids for c in out], temperature=1.0)
    for c, lp, r in zip(out, learner, raw):
        assert c.logprobs == pytest.approx(lp, abs=1e-4)  # after temperature: what the learner computes
        assert c.logprobs != pytest.approx(r, abs=1e-4)
    engine.close()


def test_pushes_load_weights_in_process_and_completions_carry_the_pushed_version(fake_vllm, small_model_dir: Path) -> None:
    from selfimprove.policy.base import SamplingParams

    engine = _engine(small_model_dir)
    greedy = SamplingParams(n=1, temperature=0.0, max_new_tokens=8)
    _sharpen(engine.local)
    engine.load_weights(engine.local.weight_state(), 5)
    # A learner step lands while vLLM samples (another thread): the completions keep the version pushed.
    engine.llm.on_generate = lambda: engine.local.load_weights(engine.local.weight_state(), 6)
    out = engine.generate(PROMPTS, greedy)
    assert {c.version for c in out} == {5} and engine.pushed_version == 5
    assert engine.llm.rpc_bytes == 0 and engine.llm.prefix_cache_resets == 1  # nothing pickled
    assert [c.token_ids for c in out] == [c.token_ids for c in engine.local.generate(PROMPTS, greedy)]
    engine.llm.on_generate = None
    engine.generate(PROMPTS, greedy)
    assert engine.pushed_version == 6 and engine.llm.prefix_cache_resets == 2
    engine.close()


def test_an_out_of_process_vllm_would_pickle_the_weights_and_is_refused(fake_vllm, small_model_dir: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from selfimprove.policy.vllm_engine import LoadInPlace

    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "1")
    with pytest.raises(ValueError, match="VLLM_ENABLE_V1_MULTIPROCESSING is '1'"):
        _engine(small_model_dir)  # before vLLM is built, not at the first push
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    engine = _engine(small_model_dir)
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "1")  # the double now pickles what apply_model is given
    with pytest.raises(TypeError, match="the weights would be pickled"):
        engine.llm.apply_model(LoadInPlace(engine.local))
    engine.close()


def test_vllm_gets_a_max_lora_rank_it_accepts() -> None:
    from selfimprove.policy.vllm_engine import max_lora_rank

    assert [max_lora_rank(r) for r in (1, 4, 8, 9, 64, 300, 512)] == [1, 8, 8, 16, 64, 320, 512]
    with pytest.raises(ValueError, match="largest max_lora_rank"):
        max_lora_rank(1024)


def test_a_lora_policy_syncs_its_adapter_as_one_lora_request_per_version(fake_vllm, small_model_dir: Path) -> None:
    from safetensors.torch import load_file

    from selfimprove.config import LoraConfig
    from selfimprove.policy.base import SamplingParams

    engine = _engine(small_model_dir, lora=LoraConfig(r=4, alpha=8))
    assert engine.lora and hasattr(engine.module, "disable_adapter")
    base = load_file(str(engine._folder / "base" / "model.safetensors"))
    assert base and not any("lora_" in k or "base_layer" in k for k in base)  # vLLM loads a plain base
    greedy = SamplingParams(n=1, temperature=0.0, max_new_tokens=8)
    requests = []
    for version in (1, 2):
        with torch.no_grad():
            for name, p in engine.local.module.named_parameters():
                if "lora_" in name:
                    p.add_(0.5 * torch.randn_like(p))
        engine.load_weights(engine.local.weight_state(), version)
        out = engine.generate(PROMPTS, greedy)
        requests.append(engine._lora_request)
        assert {c.version for c in out} == {version}
        assert [c.token_ids for c in out] == [c.token_ids for c in engine.local.generate(PROMPTS, greedy)]
    assert [r.lora_int_id for r in requests] == [2, 3] and engine.llm.rpc_bytes == 0
    assert not Path(requests[0].lora_path).exists() and Path(requests[1].lora_path).is_dir()
    engine.close()


def test_a_sleeping_engine_wakes_before_it_samples(fake_vllm, small_model_dir: Path) -> None:
    from selfimprove.policy.base import SamplingParams

    engine = _engine(small_model_dir, sleep=True)
    greedy = SamplingParams(n=1, temperature=0.0, max_new_tokens=4)
    first = engine.generate(PROMPTS, greedy)
    assert engine.llm.asleep
    _sharpen(engine.local)
    engine.load_weights(engine.local.weight_state(), 1)
    second = engine.generate(PROMPTS, greedy)
    assert engine.llm.asleep and {c.version for c in second} == {1} and first
    engine.close()


def test_a_training_run_with_engine_vllm_runs_on_the_double(fake_vllm, tmp_path: Path, small_model_dir: Path) -> None:
    """The whole loop through `engine: {kind: vllm}`: recipe, engine factory, weight pushes, rollout gap."""
    import json

    from selfimprove.methods.rl import run_rl

    recipe = RLRecipe.model_validate({
        "run_dir": str(tmp_path / "run"), "model": {"path": str(small_model_dir), "device": "cpu", "dtype": "float32"},
        "engine": {"kind": "vllm"}, "steps": 2, "prompts_per_step": 2, "sampling": {"n": 2, "max_new_tokens": 6},
        "task": {"name": "countdown", "params": {"num_numbers": 2, "max_number": 9, "min_target": 1, "max_target": 18}},
        "eval": {"num_problems": 2, "max_new_tokens": 6}, "loss": {"rollout_correction": {"kind": "tis"}}})
    run_rl(recipe)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "train/loss" in r] == [1, 2]
    assert all(r["train/rollout_kl"] < 1e-3 for r in rows if "train/loss" in r)


def _nucleus_logprobs(policy, prompt_ids, token_ids, temperature: float, top_p: float) -> list[float]:
    """log p of each token under the distribution sampled from: softmax(logits / T) kept to the smallest
    prefix of the sorted probabilities that reaches top_p, renormalised (worked out independently here)."""
    ids = torch.tensor([list(prompt_ids) + list(token_ids)])
    with torch.no_grad():
        logits = policy.module(input_ids=ids).logits[0].float()
    out = []
    for i, token in enumerate(token_ids):
        probs = torch.softmax(logits[len(prompt_ids) - 1 + i] / temperature, -1)
        ordered, order = probs.sort(descending=True)
        kept = order[(ordered.cumsum(-1) - ordered) < top_p]
        assert token in kept.tolist()
        out.append(float(torch.log(probs[token] / probs[kept].sum())))
    return out


def test_every_engine_records_the_same_behaviour_logprobs_under_top_p(fake_vllm, small_model_dir: Path) -> None:
    """vLLM's processed log-probs and our decode loop's both give the nucleus distribution's log-prob of
    the sampled token (temperature 0.8, top_p 0.7)."""
    from selfimprove.policy.base import SamplingParams

    engine = _engine(small_model_dir)
    _sharpen(engine.local)
    engine.load_weights(engine.local.weight_state(), 1)
    params = SamplingParams(n=2, temperature=0.8, top_p=0.7, max_new_tokens=6)
    for sampler in (engine, engine.local):
        for c in sampler.generate(PROMPTS[:2], params):
            assert c.logprobs == pytest.approx(_nucleus_logprobs(engine.local, c.prompt_ids, c.token_ids, 0.8, 0.7), abs=1e-4)
    engine.close()
