"""Past one process, measured side by side in one run: rollout tokens/s of the Ray pool (1 and 2 workers,
one torch thread each) against the in-process engine, and GRPO step time with asynchronous rollouts
against the synchronous loop.

1. Rollouts: the built-in tiny model (2.65M parameters, random weights), 64 Countdown prompts x 8
   samples x at most 24 tokens per call; tokens/s counts the tokens each call generated. Engines: in-process with 1 and with 2 torch threads, the Ray pool with 1 and 2
   workers. After a warm-up call each, they alternate for `--reps` repetitions; medians.
2. GRPO: `--steps` steps of GRPO (16 prompts x 8 samples) on Countdown from the same tiny model,
   synchronous and with `async: {max_staleness: 1}` (the next step's episodes sampled in a thread from
   a copy of the policy while the current step trains), one torch thread in the process (so the
   sampling thread and the training thread each get a core), alternating; median seconds per step
   after the first.

Last line: `ray2_over_inprocess=<x> async_over_sync=<y>` (the pool with 2 workers over the in-process
engine with 2 threads, in tokens/s; async over sync, in seconds per step: below 1 is faster).
Writes `bench/results/scale.{md,json}`.

    OMP_NUM_THREADS=1 .venv/bin/python bench/scale.py      # ~10 min on a quiet 2-core machine
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

import torch  # noqa: E402

from selfimprove.config import RLRecipe  # noqa: E402
from selfimprove.eval.report import markdown_table  # noqa: E402
from selfimprove.methods.rl import run_rl  # noqa: E402
from selfimprove.policy.base import SamplingParams  # noqa: E402
from selfimprove.policy.load import load_hf  # noqa: E402
from selfimprove.policy.ray_cluster import ensure_ray  # noqa: E402
from selfimprove.policy.ray_engine import RayEngine  # noqa: E402
from selfimprove.train.runlog import read_metrics  # noqa: E402
from common import RESULTS  # noqa: E402  (bench/common.py)

TASK = {"name": "countdown", "params": {"num_numbers": 3, "min_number": 1, "max_number": 20, "min_target": 10, "max_target": 50}}


def rollout_speed(args: argparse.Namespace) -> dict[str, float]:
    prompts = [f"{a} {b} {c} -> {a + b + c}:" for a, b, c in zip(range(1, 65), range(2, 66), range(3, 67))]
    params = SamplingParams(n=args.samples, temperature=1.0, max_new_tokens=args.max_new_tokens)
    local = load_hf("tiny", seed=0)
    ensure_ray(None, 3)  # logical CPUs for both pools at once; only one of them generates at a time
    engines: dict[str, tuple[Callable[[], Any], int]] = {}
    pools = {}
    for workers in (1, 2):
        pools[workers] = RayEngine(load_hf("tiny", seed=0), workers=workers, seed=0)
    for name, threads, fn in (
        ("in-process, 1 thread", 1, lambda: local.generate(prompts, params)),
        ("in-process, 2 threads", 2, lambda: local.generate(prompts, params)),
        ("Ray pool, 1 worker", 1, lambda: pools[1].generate(prompts, params)),
        ("Ray pool, 2 workers", 1, lambda: pools[2].generate(prompts, params)),
    ):
        engines[name] = (fn, threads)
    rates: dict[str, list[float]] = {name: [] for name in engines}
    for name, (fn, threads) in engines.items():  # warm-up
        torch.set_num_threads(threads)
        fn()
    for rep in range(args.reps):
        order = list(engines) if rep % 2 == 0 else list(reversed(engines))
        for name in order:
            fn, threads = engines[name]
            torch.set_num_threads(threads)
            began = time.perf_counter()
            out = fn()
            rates[name].append(sum(c.num_tokens for c in out) / (time.perf_counter() - began))
        print(f"rep {rep + 1}: " + ", ".join(f"{n} {rates[n][-1]:,.0f} tok/s" for n in engines), flush=True)
    for pool in pools.values():
        pool.close()
    return {name: statistics.median(r) for name, r in rates.items()}


def grpo_steps(args: argparse.Namespace) -> dict[str, float]:
    torch.set_num_threads(1)
    seconds: dict[str, list[float]] = {"sync": [], "async": []}
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.grpo_reps):
            for mode in (("sync", "async") if rep % 2 == 0 else ("async", "sync")):
                recipe = RLRecipe.model_validate({
                    "run_dir": f"{tmp}/{mode}{rep}", "model": {"path": "tiny"}, "task": TASK, "steps": args.steps,
                    "prompts_per_step": 16, "sampling": {"n": 8, "max_new_tokens": 24},
                    "schedule": {"checkpoint_every": 10_000}, "eval": {"num_problems": 4, "max_new_tokens": 8},
                    **({"async": {"max_staleness": 1}} if mode == "async" else {})})
                run_rl(recipe)
                rows = [r for r in read_metrics(Path(recipe.run_dir) / "metrics.jsonl") if "seconds" in r]
                per_step = [b["seconds"] - a["seconds"] for a, b in zip(rows, rows[1:])]
                seconds[mode].append(statistics.median(per_step))
                print(f"grpo rep {rep + 1} {mode}: {seconds[mode][-1]:.3f} s/step", flush=True)
    return {mode: statistics.median(v) for mode, v in seconds.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--samples", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=24)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--grpo-reps", type=int, default=2)
    args = p.parse_args()
    began = time.time()
    speed = rollout_speed(args)
    steps = grpo_steps(args)
    ray2 = speed["Ray pool, 2 workers"] / speed["in-process, 2 threads"]
    ratio = steps["async"] / steps["sync"]
    RESULTS.mkdir(parents=True, exist_ok=True)
    md = ["# Scale: the Ray rollout pool and asynchronous rollouts (2-core CPU machine)\n",
          f"Command: `OMP_NUM_THREADS=1 .venv/bin/python bench/scale.py` ({(time.time() - began) / 60:.0f} min). "
          f"Tiny model (random weights), 64 prompts x {args.samples} samples x at most {args.max_new_tokens} tokens per call, "
          f"tokens/s of the tokens generated, medians of {args.reps} alternating repetitions.\n",
          markdown_table(["engine", "tokens/s", "over in-process (2 threads)"],
                         [[n, f"{v:,.0f}", f"{v / speed['in-process, 2 threads']:.2f}"] for n, v in speed.items()]),
          f"\nGRPO (16 prompts x 8 samples x 24 tokens, one torch thread), median seconds per step over {args.steps} steps, "
          f"{args.grpo_reps} alternating runs each:\n",
          markdown_table(["loop", "s/step"], [[m, f"{v:.3f}"] for m, v in steps.items()]),
          f"\n`ray2_over_inprocess={ray2:.2f} async_over_sync={ratio:.2f}`\n"]
    (RESULTS / "scale.md").write_text("\n".join(md))
    (RESULTS / "scale.json").write_text(json.dumps({"rollouts_tok_s": speed, "grpo_s_per_step": steps, "ray2_over_inprocess": ray2,
                                                    "async_over_sync": ratio, "args": vars(args)}, indent=2))
    print(f"ray2_over_inprocess={ray2:.2f} async_over_sync={ratio:.2f}")


if __name__ == "__main__":
    main()
