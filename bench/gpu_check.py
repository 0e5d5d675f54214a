"""The GPU check for engine.kind vllm (run by `bench/gpu_check.sh` on a CUDA machine, under 8 minutes):

1. generation speed: vLLM against Hugging Face `model.generate` on the same model, prompts and sampling
   (32 gsm_symbolic prompts x 4 samples x 128 new tokens), tokens/s of the tokens generated;
2. log-prob agreement: vLLM's behaviour log-probs against the learner's on the same sampled tokens
   (max and mean |Δ|);
3. a few GRPO steps with `engine: {kind: vllm}` (weights pushed into vLLM after every update).

Last line: `vllm_tok_s=<x> hf_tok_s=<y> speedup=<x/y> max_abs_logprob_gap=<a> mean_abs_logprob_gap=<b> grpo_steps=<n>`.
`--cpu-smoke` runs what a CPU can (the HF side and the report, with the tiny model) so the script is tested
without a GPU.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import torch

from selfimprove.policy.base import SamplingParams
from selfimprove.policy.load import load_hf
from selfimprove.tasks import make_task


def hf_generate_speed(policy, prompts: list[str], params: SamplingParams) -> float:
    """Tokens/s of `model.generate` (sampling, n per prompt) on the same prompts."""
    tok = policy.tokenizer
    tok.padding_side = "left"
    batch = tok([policy.tokenizer.decode(policy.encode_prompt(p)) for p in prompts], return_tensors="pt", padding=True,
                add_special_tokens=False).to(policy.device)
    began = time.perf_counter()
    out = policy.model.generate(**batch, do_sample=True, temperature=params.temperature, max_new_tokens=params.max_new_tokens,
                                num_return_sequences=params.n, pad_token_id=policy.pad_id)
    seconds = time.perf_counter() - began
    new = out[:, batch["input_ids"].shape[1]:]
    tokens = int((new != policy.pad_id).sum())
    return tokens / seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="runs/smollm2")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--cpu-smoke", action="store_true")
    args = p.parse_args()
    task = make_task("gsm_symbolic")
    prompts = [pr.prompt for pr in task.problems("test", 32 if not args.cpu_smoke else 2)]
    params = SamplingParams(n=4 if not args.cpu_smoke else 2, temperature=1.0, max_new_tokens=128 if not args.cpu_smoke else 8)
    device = "cuda" if not args.cpu_smoke else "cpu"
    hf = load_hf(args.model if not args.cpu_smoke else "tiny:small", device=device, dtype="bfloat16" if not args.cpu_smoke else "float32",
                 chat=not args.cpu_smoke)
    hf_generate_speed(hf, prompts[:2], params)  # warm-up
    hf_speed = hf_generate_speed(hf, prompts, params)
    report = {"hf_tok_s": hf_speed}
    if args.cpu_smoke:
        report.update(vllm_tok_s=float("nan"), max_abs_logprob_gap=float("nan"), mean_abs_logprob_gap=float("nan"), grpo_steps=0)
    else:
        from selfimprove.config import RLRecipe
        from selfimprove.methods.rl import run_rl
        from selfimprove.policy.vllm_engine import VLLMEngine

        engine = VLLMEngine(load_hf(args.model, device="cuda", dtype="bfloat16", chat=True), gpu_memory_utilization=0.3)
        engine.generate(prompts[:2], params)  # warm-up
        began = time.perf_counter()
        out = engine.generate(prompts, params)
        report["vllm_tok_s"] = sum(c.num_tokens for c in out) / (time.perf_counter() - began)
        report.update(engine.logprob_gap(prompts[:8], params))
        engine.close()
        del engine
        torch.cuda.empty_cache()
        with tempfile.TemporaryDirectory() as tmp:
            recipe = RLRecipe.model_validate({
                "run_dir": tmp, "model": {"path": args.model, "chat": True, "device": "cuda", "dtype": "bfloat16"},
                "engine": {"kind": "vllm", "gpu_memory_utilization": 0.3}, "task": {"name": "gsm_symbolic"},
                "steps": args.steps, "prompts_per_step": 4, "sampling": {"n": 4, "max_new_tokens": 128},
                "optim": {"lr": 1e-6, "micro_batch_size": 4}, "eval": {"num_problems": 8, "batch_size": 8, "max_new_tokens": 128}})
            summary = run_rl(recipe)
            report["grpo_steps"] = summary["steps"]
            report["grpo_accuracy"] = summary["accuracy"]
    report["speedup"] = report["vllm_tok_s"] / report["hf_tok_s"]
    print(json.dumps(report, indent=2))
    print(" ".join(f"{k}={report[k]:.4g}" for k in ("vllm_tok_s", "hf_tok_s", "speedup", "max_abs_logprob_gap",
                                                    "mean_abs_logprob_gap")) + f" grpo_steps={report['grpo_steps']}")


if __name__ == "__main__":
    main()
