"""The GPU check, for the machine a task may be lent: one GPU, no network, its own python3 with torch,
transformers and peft but no vLLM, pydantic or datasets (`bench/gpu_check.sh` carries pydantic's wheels
and runs this with PYTHONPATH=src). It writes one JSON (`--out`) with:

1. `decode`: our decode loop against Hugging Face `generate`, tokens/s in bf16 at a fixed length (no end
   token), on the built-in tiny model and on a randomly initialised Llama of SmolLM2-135M's shape (its
   config, 135M parameters, no download);
2. `grpo`: seconds per GRPO step (median after two warm-up steps) and peak GPU memory, on the tiny model
   and on the 135M shape with the tiny model's tokenizer (its vocabulary, so 106M parameters);
3. `rollout_gap`: the sampler/learner log-prob gap with a bf16 sampler and an fp32 learner on the same
   tokens (mean and max |d log p|, the k3 KL), and what each rollout correction (none, tis, mis; per
   token and per sequence, cap 2) does with it: the largest ratio and the share of tokens clipped or
   masked. Random weights understate a trained model's gap (their next-token distributions are nearly
   flat), so each model is also measured with its embeddings scaled x3 ("sharpened");
4. `vllm`: vLLM against HF `generate` and its log-prob gap, when vLLM is installed (else says so).

A part that fails records its error and the others still run; parts past `--budget-s` are skipped.
`--cpu-smoke` runs every part at toy sizes on the CPU: `make test` runs it with vLLM, Ray, datasets,
reasoning_gym and math_verify unimportable, as on the lent machine.

Last line: `decode_speedup_tiny=<x> decode_speedup_135m=<y> grpo_s_per_step_tiny=<s> ... peak_gpu_gib=<g>`.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))  # the lent machine runs from a checkout, without an install

from selfimprove.algos.rollout_correction import rollout_correction  # noqa: E402
from selfimprove.policy.base import SamplingParams  # noqa: E402
from selfimprove.policy.decode import decode  # noqa: E402
from selfimprove.policy.tiny import build_tiny_model, build_tokenizer  # noqa: E402

# SmolLM2-135M(-Instruct)'s config.json, as published (30 layers, 576 wide, 9 heads, 3 KV heads, tied).
SMOLLM2_135M = dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
                    max_position_embeddings=8192, rope_theta=100000.0, rms_norm_eps=1e-5, tie_word_embeddings=True,
                    initializer_range=0.041666666666666664, vocab_size=49152, bos_token_id=1, eos_token_id=2, pad_token_id=2)
TOY_135M = dict(SMOLLM2_135M, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                num_key_value_heads=1, vocab_size=512)

SIZES = {  # (prompts, samples, prompt tokens, new tokens, timed repetitions)
    "gpu": {"decode": (32, 8, 32, 128, 3), "grpo_steps": 12, "grpo_prompts": 16, "grpo_samples": 8, "grpo_tokens": 48,
            "gap": (32, 4, 64)},
    "cpu": {"decode": (2, 2, 8, 8, 1), "grpo_steps": 3, "grpo_prompts": 2, "grpo_samples": 2, "grpo_tokens": 6, "gap": (2, 2, 8)},
}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_gib(device: torch.device) -> float | None:
    return round(torch.cuda.max_memory_allocated(device) / 2**30, 3) if device.type == "cuda" else None


def llama(shape: dict[str, Any], dtype: torch.dtype, device: torch.device, seed: int = 0) -> torch.nn.Module:
    """A randomly initialised Llama of the given config fields."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(**shape)).to(device=device, dtype=dtype).eval()


def tiny(preset: str, dtype: torch.dtype, device: torch.device) -> torch.nn.Module:
    model, _ = build_tiny_model(preset, seed=0)  # type: ignore[arg-type]
    return model.to(device=device, dtype=dtype).eval()


def params_m(model: torch.nn.Module) -> float:
    return round(sum(p.numel() for p in model.parameters()) / 1e6, 1)


# ----------------------------------------------------------------------------------------------- 1. decode
def decode_speed(model: torch.nn.Module, device: torch.device, sizes: tuple[int, int, int, int, int]) -> dict[str, Any]:
    """Tokens/s of our decode loop and of `generate` on the same random prompts (fixed length, no end
    token, temperature 1, no top-k / top-p), after a warm-up each; medians, alternating order."""
    from transformers import GenerationConfig

    prompts, n, prompt_len, new, reps = sizes
    vocab = model.config.vocab_size
    ids = torch.randint(3, vocab, (prompts, prompt_len), generator=torch.Generator().manual_seed(0))
    params = SamplingParams(n=n, temperature=1.0, max_new_tokens=new)
    config = GenerationConfig(do_sample=True, temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=new, min_new_tokens=new,
                              num_return_sequences=n, pad_token_id=0, eos_token_id=None)
    generator = torch.Generator(device=device).manual_seed(0)

    def ours() -> int:
        out = decode(model, ids.tolist(), params, pad_id=0, eos_ids=[], detokenize=lambda t: "", generator=generator)
        return sum(c.num_tokens for c in out)

    def hf() -> int:
        with torch.no_grad():
            out = model.generate(input_ids=ids.to(device), attention_mask=torch.ones_like(ids, device=device),
                                 generation_config=config)
        return int(out[:, prompt_len:].numel())

    engines: dict[str, Callable[[], int]] = {"ours": ours, "hf_generate": hf}
    for fn in engines.values():
        fn()
    rates: dict[str, list[float]] = {k: [] for k in engines}
    for rep in range(reps):
        for name in (list(engines) if rep % 2 == 0 else list(reversed(engines))):
            sync(device)
            began = time.perf_counter()
            tokens = engines[name]()
            sync(device)
            rates[name].append(tokens / (time.perf_counter() - began))
    ours_rate, hf_rate = statistics.median(rates["ours"]), statistics.median(rates["hf_generate"])
    return {"sequences": prompts * n, "new_tokens": new, "prompt_tokens": prompt_len, "ours_tok_s": round(ours_rate, 1),
            "hf_tok_s": round(hf_rate, 1), "speedup": round(ours_rate / hf_rate, 3), "params_m": params_m(model)}


def part_decode(device: torch.device, smoke: bool) -> dict[str, Any]:
    sizes = SIZES["cpu" if smoke else "gpu"]["decode"]
    out = {"dtype": "bfloat16"}
    out["tiny"] = decode_speed(tiny("small" if smoke else "default", torch.bfloat16, device), device, sizes)
    out["smollm2_135m_random"] = decode_speed(llama(TOY_135M if smoke else SMOLLM2_135M, torch.bfloat16, device), device, sizes)
    return out


# ----------------------------------------------------------------------------------------------- 2. grpo
def grpo_seconds(model_path: str, device: torch.device, smoke: bool, folder: Path) -> dict[str, Any]:
    """Seconds per step of a GRPO run on Countdown (median after two warm-up steps) and peak memory."""
    from selfimprove.config import RLRecipe
    from selfimprove.methods.rl import run_rl

    size = SIZES["cpu" if smoke else "gpu"]
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    recipe = RLRecipe.model_validate({
        "run_dir": str(folder), "model": {"path": model_path, "device": str(device)},
        "task": {"name": "countdown", "params": {"num_numbers": 3, "max_number": 20, "min_target": 10, "max_target": 50}},
        "steps": size["grpo_steps"], "prompts_per_step": size["grpo_prompts"],
        "sampling": {"n": size["grpo_samples"], "max_new_tokens": size["grpo_tokens"]}, "optim": {"lr": 5e-5},
        "eval": {"num_problems": 8, "batch_size": 8, "max_new_tokens": size["grpo_tokens"]},
        "schedule": {"checkpoint_every": 10_000, "save_rollouts": False}})
    began = time.perf_counter()
    run_rl(recipe)
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    clock = [r["seconds"] for r in rows if "train/loss" in r]
    steps = [b - a for a, b in zip([0.0, *clock], clock)][2:] or [clock[-1]]
    return {"steps": len(clock), "s_per_step": round(statistics.median(steps), 4), "wall_s": round(time.perf_counter() - began, 1),
            "sequences_per_step": size["grpo_prompts"] * size["grpo_samples"], "max_new_tokens": size["grpo_tokens"],
            "peak_gpu_gib": peak_gib(device), "model_dtype": "float32"}


def part_grpo(device: torch.device, smoke: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        out["tiny"] = grpo_seconds("tiny:small" if smoke else "tiny", device, smoke, Path(tmp) / "tiny")
        from transformers import LlamaConfig, LlamaForCausalLM

        tokenizer = build_tokenizer()
        shape = {k: v for k, v in (TOY_135M if smoke else SMOLLM2_135M).items()
                 if k not in ("vocab_size", "bos_token_id", "eos_token_id", "pad_token_id")}
        torch.manual_seed(0)
        model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                                             eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, **shape))
        folder = Path(tmp) / "smollm2_shape"
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        out["smollm2_135m_shape_char_vocab"] = grpo_seconds(str(folder), device, smoke, Path(tmp) / "smollm2")
        out["smollm2_135m_shape_char_vocab"]["params_m"] = params_m(model)
    return out


# ----------------------------------------------------------------------------------------------- 3. rollout gap
def gap(model: torch.nn.Module, device: torch.device, sizes: tuple[int, int, int]) -> dict[str, Any]:
    """Sample with a bf16 copy, score the same tokens with the fp32 model; the corrections' numbers."""
    from selfimprove.policy.logprobs import token_logprobs
    from selfimprove.rollout.episode import Episode, Segment, collate

    prompts, n, new = sizes
    sampler = copy.deepcopy(model).to(torch.bfloat16)
    ids = torch.randint(3, model.config.vocab_size, (prompts, 16), generator=torch.Generator().manual_seed(1)).tolist()
    completions = decode(sampler, ids, SamplingParams(n=n, temperature=1.0, max_new_tokens=new), pad_id=0, eos_ids=[],
                         detokenize=lambda t: "", generator=torch.Generator(device=device).manual_seed(0))
    del sampler
    episodes = [Episode([Segment("prompt", c.prompt_ids), Segment("completion", c.token_ids, trainable=True, logprobs=c.logprobs)],
                        group=c.prompt_index) for c in completions]
    batch = collate(episodes, 0).to(device)
    with torch.no_grad():
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False).logits
        logp = token_logprobs(logits[:, :-1], batch.input_ids[:, 1:])
    valid = (batch.mask * batch.behaviour_mask) > 0
    delta = (logp - batch.behaviour_logprobs)[valid].abs()
    out: dict[str, Any] = {"tokens": int(valid.sum()), "mean_abs_logprob_gap": float(delta.mean()), "max_abs_logprob_gap": float(delta.max())}
    for level in ("token", "sequence"):
        for kind in ("none", "tis", "mis"):
            fix = rollout_correction(logp, batch.behaviour_logprobs, batch.behaviour_mask, batch.mask, kind=kind, level=level, cap=2.0)
            out[f"{level}/{kind}"] = {k: float(v) for k, v in fix.stats.items()} | {
                "mean_weight": float(fix.weights[valid].mean())}
    return out


def part_rollout_gap(device: torch.device, smoke: bool) -> dict[str, Any]:
    sizes = SIZES["cpu" if smoke else "gpu"]["gap"]
    out: dict[str, Any] = {"sampler": "bfloat16", "learner": "float32", "cap": 2.0}
    for scale in (1.0, 3.0):
        suffix = "" if scale == 1.0 else "_sharpened"
        model = tiny("small" if smoke else "default", torch.float32, device)
        big = llama(TOY_135M if smoke else SMOLLM2_135M, torch.float32, device)
        with torch.no_grad():
            for m in (model, big):
                m.get_input_embeddings().weight.mul_(scale)
        out["tiny" + suffix] = gap(model, device, sizes)
        out["smollm2_135m_random" + suffix] = gap(big, device, sizes)
        del big
    return out


# ----------------------------------------------------------------------------------------------- 4. vllm
def part_vllm(device: torch.device, smoke: bool) -> dict[str, Any]:
    try:
        import vllm  # noqa: F401
    except ImportError:
        return {"status": "not installed (the lent machine has no vLLM and no network to install it)"}
    if device.type != "cuda":
        return {"status": "needs CUDA"}
    from selfimprove.policy.load import load_hf
    from selfimprove.policy.vllm_engine import VLLMEngine

    model_dir = Path(tempfile.mkdtemp()) / "tiny"
    model, tokenizer = build_tiny_model("default", seed=0)
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    engine = VLLMEngine(load_hf(str(model_dir), device="cuda", dtype="bfloat16"), gpu_memory_utilization=0.3)
    prompts = [f"{a} {b} -> {a + b}:" for a, b in zip(range(1, 33), range(5, 37))]
    params = SamplingParams(n=4, temperature=1.0, max_new_tokens=64)
    engine.generate(prompts[:2], params)
    began = time.perf_counter()
    out = engine.generate(prompts, params)
    result = {"vllm_tok_s": sum(c.num_tokens for c in out) / (time.perf_counter() - began), **engine.logprob_gap(prompts[:8], params)}
    engine.close()
    return result


PARTS: dict[str, Callable[[torch.device, bool], dict[str, Any]]] = {
    "decode": part_decode, "grpo": part_grpo, "rollout_gap": part_rollout_gap, "vllm": part_vllm}


def summary_line(report: dict[str, Any]) -> str:
    def get(*keys: str) -> Any:
        value: Any = report["parts"]
        for k in keys:
            value = value.get(k, {}) if isinstance(value, dict) else {}
        return value if value != {} else None

    fields = {"decode_speedup_tiny": get("decode", "tiny", "speedup"),
              "decode_speedup_135m": get("decode", "smollm2_135m_random", "speedup"),
              "grpo_s_per_step_tiny": get("grpo", "tiny", "s_per_step"),
              "grpo_s_per_step_135m": get("grpo", "smollm2_135m_shape_char_vocab", "s_per_step"),
              "rollout_kl_bf16_135m": get("rollout_gap", "smollm2_135m_random_sharpened", "token/none", "rollout_kl"),
              "peak_gpu_gib": report.get("peak_gpu_gib")}
    return " ".join(f"{k}={v:.4g}" if isinstance(v, (int, float)) else f"{k}={v}" for k, v in fields.items())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cpu-smoke", action="store_true", help="every part at toy sizes on the CPU")
    ap.add_argument("--out", type=Path, default=None,
                    help="where the JSON goes (default: bench/results/gpu_check.json; none for --cpu-smoke)")
    ap.add_argument("--budget-s", type=float, default=420.0, help="skip the parts that would start after this")
    ap.add_argument("--only", nargs="*", choices=list(PARTS), help="run only these parts")
    args = ap.parse_args(argv)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    began = time.perf_counter()
    if not args.cpu_smoke and not torch.cuda.is_available():
        print("gpu_check: no CUDA device here (use --cpu-smoke for the CPU half)", file=sys.stderr)
        return 2
    device = torch.device("cpu" if args.cpu_smoke else "cuda")
    import transformers

    report: dict[str, Any] = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__, "transformers": transformers.__version__, "python": platform.python_version(),
        "cpu_smoke": args.cpu_smoke, "parts": {}, "errors": {}, "skipped": []}
    out = args.out or (None if args.cpu_smoke else ROOT / "bench" / "results" / "gpu_check.json")

    def write() -> None:  # after every part: a run stopped by the time limit keeps what it measured
        report["peak_gpu_gib"] = peak_gib(device)
        report["wall_seconds"] = round(time.perf_counter() - began, 1)
        if out is not None:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(report, indent=2) + "\n")

    for name, part in PARTS.items():
        if args.only and name not in args.only:
            continue
        if time.perf_counter() - began > args.budget_s:
            report["skipped"].append(name)
            continue
        started = time.perf_counter()
        try:
            report["parts"][name] = part(device, args.cpu_smoke) | {"seconds": round(time.perf_counter() - started, 1)}
        except Exception as err:  # noqa: BLE001 - one part's failure must not lose the others' numbers
            report["errors"][name] = "".join(traceback.format_exception_only(err)).strip()
            traceback.print_exc()
        print(f"gpu_check: {name} done in {time.perf_counter() - started:.0f}s", file=sys.stderr, flush=True)
        write()
    write()
    print(json.dumps(report, indent=2))
    print(summary_line(report))
    return 1 if report["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
