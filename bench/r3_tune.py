"""Tune R^3's PPO step size for the tiny model on a validation split of *train* problems (never the test split).

R^3's PPO (SPECS §4: GAE gamma 1, lambda 0.95, clip 0.2, vf_coef 5, 2 epochs, KL 0.05 in the reward, a
value head on the policy) was set for a 7B model at lr 3e-7. For the tiny model the bench needs its own
step size: too large and PPO from the SFT model *lowers* its accuracy. This trains PPO from s_0 (the
`rl` arm: the curriculum that decides nothing) from the bench's SFT base for `--steps` steps per
candidate `(lr, vf_coef)`, then measures greedy accuracy on `--val-problems` train-split problems far
past every problem that SFT or RL trains on (index `--val-start` onwards). The candidate with the best
validation accuracy is the one `bench/r3.py` should use (`--lr`, `--vf-coef`); vf_coef 5 is R^3's value
and stays unless a candidate without it is clearly better (then say so in the table).

Needs the bench's base (`bench/r3.py` builds it first). Writes `bench/results/r3_tune.{md,json}`.

    OMP_NUM_THREADS=1 .venv/bin/python bench/r3_tune.py --task chain6-sft600     # ~12 min on the 2-core machine
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from transformers.utils import logging as hf_logging  # noqa: E402

from selfimprove.config import validate  # noqa: E402
from selfimprove.eval.evaluate import evaluate  # noqa: E402
from selfimprove.eval.report import markdown_table  # noqa: E402
from selfimprove.methods.r3 import R3, R3Recipe  # noqa: E402
from selfimprove.policy.load import load_engine  # noqa: E402
from selfimprove.tasks.plugins import make_task  # noqa: E402
from selfimprove.train.runlog import read_metrics  # noqa: E402
from common import RESULTS, chain_task, line_bar, log, repo_relative_paths  # noqa: E402  (bench/common.py)
from r3 import COUNTDOWN, SFT_POOL, max_tokens, ppo_loss  # noqa: E402  (bench/r3.py)

CANDIDATES = ((5e-5, 5.0), (1e-5, 5.0), (5e-5, 0.5))


def task_of(folder: str) -> dict[str, Any]:
    """The task of a bench folder: `chain<N>-sft<steps>` or `countdown-sft<steps>`."""
    name = folder.split("-sft")[0]
    return COUNTDOWN if name == "countdown" else chain_task(int(name.removeprefix("chain")))


def validation_accuracy(model: str, task: dict[str, Any], start: int, n: int) -> float:
    t = make_task(task["name"], task["params"])
    policy = load_engine("hf", model)
    return evaluate(policy, t, t.problems("train", n, start=start), max_new_tokens=max_tokens(task)).accuracy


def train(root: Path, base: str, task: dict[str, Any], lr: float, vf_coef: float, steps: int) -> Path:
    out = root / f"lr{lr:g}-vf{vf_coef:g}"
    recipe = validate(R3Recipe, {
        "run_dir": str(out), "seed": 0, "model": {"path": base}, "task": task, "steps": steps, "prompts_per_step": 16,
        "first_problem": SFT_POOL, "sampling": {"n": 8, "temperature": 1.0, "max_new_tokens": max_tokens(task)},
        "optim": {"lr": lr, "warmup_steps": 5, "micro_batch_size": 128},
        "schedule": {"eval_every": 0, "checkpoint_every": 20},
        "eval": {"split": "test", "num_problems": 1, "max_new_tokens": max_tokens(task)},
        "loss": ppo_loss(vf_coef), "r3": {"curriculum": "none", "pool": 512}})
    if not (out / "summary.json").is_file():
        log(f"lr {lr:g}, vf_coef {vf_coef:g}: {steps} PPO steps from s_0")
        with line_bar(out.name, steps, keys=("train/reward", "train/value_loss", "train/explained_variance")) as on_step:
            R3(recipe).run(on_step)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run-dir", default="runs/r3-bench")
    p.add_argument("--task", default="chain6-sft600", help="the bench's folder of a task: chain<N>-sft<steps> or countdown-sft<steps>")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--val-start", type=int, default=100_000)
    p.add_argument("--val-problems", type=int, default=300)
    args = p.parse_args(argv)
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    began = time.time()
    task = task_of(args.task)
    root = Path(args.run_dir) / args.task
    base = root / "base" / "final"
    if not (base / "config.json").is_file():
        raise SystemExit(f"no base model at {base}: run bench/r3.py first (it builds the SFT base)")
    rows = [{"lr": None, "vf_coef": None, "steps": 0, "val_accuracy": validation_accuracy(str(base), task, args.val_start, args.val_problems),
             "first_reward": None, "last_reward": None}]
    log(f"base: validation {rows[0]['val_accuracy']:.1%}")
    for lr, vf in CANDIDATES:
        out = train(root / "tune", str(base), task, lr, vf, args.steps)
        rewards = [m["train/reward"] for m in read_metrics(out / "metrics.jsonl") if "train/reward" in m]
        acc = validation_accuracy(str(out / "final"), task, args.val_start, args.val_problems)
        rows.append({"lr": lr, "vf_coef": vf, "steps": args.steps, "val_accuracy": acc,
                     "first_reward": sum(rewards[:10]) / 10, "last_reward": sum(rewards[-10:]) / 10})
        log(f"lr {lr:g} vf {vf:g}: validation {acc:.1%}, train reward {rows[-1]['first_reward']:.3f} -> {rows[-1]['last_reward']:.3f}")
    table = [["base (SFT)" if r["lr"] is None else f"{r['lr']:g}", "" if r["vf_coef"] is None else f"{r['vf_coef']:g}",
              r["steps"], f"{100 * r['val_accuracy']:.1f}",
              "" if r["first_reward"] is None else f"{r['first_reward']:.3f} -> {r['last_reward']:.3f}"] for r in rows]
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = f"r3_tune_{args.task}"
    (RESULTS / f"{name}.md").write_text("\n".join([
        f"# R^3's PPO step size for the tiny model ({args.task}; {(time.time() - began) / 60:.0f} min)\n",
        f"Command: `OMP_NUM_THREADS=1 .venv/bin/python bench/r3_tune.py {' '.join(repo_relative_paths(sys.argv[1:]))}`. PPO from s_0, seed 0, "
        f"{args.steps} steps of 16 prompts x 8 samples from the bench's SFT base; greedy accuracy on {args.val_problems} "
        f"*train*-split problems from index {args.val_start} (never trained on; the test split is not used).\n",
        markdown_table(["lr", "vf_coef", "steps", "validation greedy %", "train reward (first 10 -> last 10 steps)"], table)]))
    (RESULTS / f"{name}.json").write_text(json.dumps(repo_relative_paths({"rows": rows, "setup": {
        "task": task, "steps": args.steps, "val_start": args.val_start, "val_problems": args.val_problems,
        "wall_seconds": round(time.time() - began)}}), indent=2))
    log(f"wrote {RESULTS / name}.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
