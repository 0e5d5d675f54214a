"""bf16 on CPU, side by side: the learner's GRPO step and a decode call, fp32 against `torch.autocast`
bfloat16, alternating on the same batches (issue 25).

The model is the demo's SFT model (`runs/demo/sft/final`, from `make demo`) or `--model`; the batch is
the demo's GRPO batch (16 Countdown prompts x 8 samples, 24 new tokens, temperature 1). Each repetition
times one learner step (`optim.autocast: none` vs `bfloat16`, each on its own copy of the model) and
one decode call of the batch (plain vs under autocast), in alternating order; medians over `--reps`.
The last line is `step_ratio=<bf16/fp32> decode_ratio=<bf16/fp32>` (below 1: bf16 is faster).

    .venv/bin/python bench/bf16.py
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_result  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, default=Path("runs/demo/sft/final"))
    ap.add_argument("--reps", type=int, default=7)
    args = ap.parse_args(argv)
    from selfimprove.config import LossConfig, OptimConfig
    from selfimprove.policy.base import SamplingParams
    from selfimprove.policy.hf import HFPolicy
    from selfimprove.rollout.episode import collate
    from selfimprove.rollout.single import sample_episodes
    from selfimprove.tasks.plugins import make_task
    from selfimprove.train.learner import Learner
    from selfimprove.train.objectives import PolicyGradientObjective
    from selfimprove.train.update import prepare

    if not args.model.exists():
        raise SystemExit(f"{args.model} not found: run `make demo` first, or pass --model DIR")
    task = make_task("countdown", {"num_numbers": 3, "min_number": 1, "max_number": 20, "min_target": 10,
                                   "max_target": 50, "format": "expression"})
    base = HFPolicy.load(args.model, seed=0)
    params = SamplingParams(n=8, temperature=1.0, max_new_tokens=24)
    problems = task.problems("train", 16, start=2000)
    loss = LossConfig(estimator="grpo", aggregation="seq_mean", kl_coef=0.0)
    objective = PolicyGradientObjective(loss, max_len=24, off_policy=False)
    learners = {}
    for cast in ("none", "bfloat16"):
        policy = HFPolicy(copy.deepcopy(base.model), base.tokenizer, seed=0)
        learners[cast] = Learner(policy, OptimConfig(lr=5e-5, micro_batch_size=128, autocast=cast), total_steps=100)
    episodes = sample_episodes(base, task, problems, params)
    batch = collate(episodes, base.pad_id)
    prepare(learners["none"], batch, loss)
    prompts = [p.prompt for p in problems]

    def step(cast: str) -> float:
        start = time.perf_counter()
        learners[cast].step(batch, objective)
        return time.perf_counter() - start

    def decode(cast: str) -> float:
        ctx = torch.autocast("cpu", dtype=torch.bfloat16) if cast == "bfloat16" else contextlib.nullcontext()
        start = time.perf_counter()
        with ctx:
            base.generate(prompts, params)
        return time.perf_counter() - start

    times: dict[tuple[str, str], list[float]] = {}
    for fn in (step, decode):
        for cast in ("none", "bfloat16"):
            fn(cast)  # warm-up
    for rep in range(args.reps):
        for fn in (step, decode):
            for cast in (("none", "bfloat16") if rep % 2 == 0 else ("bfloat16", "none")):
                times.setdefault((fn.__name__, cast), []).append(fn(cast))
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"model {args.model}, batch {batch.size} x {batch.input_ids.shape[1]} tokens, torch threads {torch.get_num_threads()}, "
          f"cpu capability {torch.backends.cpu.get_cpu_capability()}")
    for name in ("step", "decode"):
        print(f"{name}: fp32 {med[(name, 'none')]:.3f} s, bf16 autocast {med[(name, 'bfloat16')]:.3f} s (median of {args.reps})")
    ratios = {name: med[(name, "bfloat16")] / med[(name, "none")] for name in ("step", "decode")}
    write_result("bf16", "bf16 autocast against fp32 on the CPU (bench/bf16.py)", {
        "model": str(args.model), "reps": args.reps, "batch": [batch.size, int(batch.input_ids.shape[1])],
        "seconds": {f"{name}/{cast}": v for (name, cast), v in times.items()},
        "median_seconds": {f"{name}/{cast}": v for (name, cast), v in med.items()}, "ratio_bf16_to_fp32": ratios,
    }, ["| | fp32 s | bf16 autocast s | bf16 / fp32 |", "|---|---:|---:|---:|",
        *(f"| {name} | {med[(name, 'none')]:.3f} | {med[(name, 'bfloat16')]:.3f} | {ratios[name]:.3f} |" for name in ("step", "decode")),
        "", f"Medians of {args.reps} alternating repetitions; model `{args.model}`, batch {batch.size} x "
        f"{batch.input_ids.shape[1]} tokens (the demo's GRPO batch)."])
    print(f"step_ratio={med[('step', 'bfloat16')] / med[('step', 'none')]:.3f} "
          f"decode_ratio={med[('decode', 'bfloat16')] / med[('decode', 'none')]:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
