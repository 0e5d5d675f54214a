"""R^3 against RL from s_0 and continued SFT, at one sampled-token budget, on long chains and Countdown.

Everything is built under `--run-dir` (default `runs/r3-bench`); a stage whose outputs exist is skipped,
so an interrupted run resumes (every training run also resumes from its checkpoints):

1. **Sweep** (chain only): the tiny model after `--sweep-steps` SFT steps (default: as many as the base,
   `--sft-steps`, 300; the committed run swept at 300 but trained its base 600 steps, which then solved
   67.8% of 6-step chains and 59.5% of 8-step ones: RL from s_0 did not struggle) on chains of 4, 6, 8 and 10
   steps; greedy accuracy on held-out chains. The bench's chain length is the longest whose SFT
   accuracy is still at least `--min-sft-accuracy` (10%: RL needs some successes to learn from, and the
   longer the chain the harder exploration from s_0 is: where R^3 should help).
2. **Base** per task: SFT on a pool of 2,000 demonstrations (`--sft-steps`).
3. **Arms**, for every seed, from the same base, each until `--budget` sampled tokens:
   `rl` (PPO from s_0: R^3's PPO with the `none` curriculum), `r3-staged`, `r3-mixed` (R^3's method),
   `r3-adaptive`; and `sft` (SFT continued on the same pool's demonstrations for as many steps as `rl`
   took: the same number of updates, no sampling). PPO as R^3 does (SPECS §4): GAE gamma 1, lambda
   0.95, clip 0.2, vf_coef 5, 2 epochs, KL 0.05 in the reward, a value head on the policy; the step
   size (`--lr` 1e-5) is the tiny model's own, chosen by `bench/r3_tune.py` on train problems
   (`bench/results/r3_tune_chain6-sft600.md`: at 5e-5 PPO from s_0 lowered validation accuracy by 10 points).
4. **Report**: greedy accuracy of every arm on `--test-problems` held-out problems, per seed and as
   mean ± standard error, `bench/results/r3.md`, rows in `bench/results/r3.json`, learning curves (and
   the start-state k each curriculum trained on) in `bench/results/r3.png` (`--out` names another stem:
   the 600-step base's run is `bench/results/r3_sft600.*`, from `--sweep-steps 300 --sft-steps 600 --out r3_sft600`).

    OMP_NUM_THREADS=1 .venv/bin/python bench/r3.py --tasks chain       # ~1.2 h on the 2-core machine, and beside it
    OMP_NUM_THREADS=1 .venv/bin/python bench/r3.py --tasks countdown   # then `bench/r3.py` alone writes the joint report
    .venv/bin/python bench/r3.py --quick --run-dir runs/r3-quick    # minutes: a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from transformers.utils import logging as hf_logging  # noqa: E402

from selfimprove.config import SFTRecipe, validate  # noqa: E402
from selfimprove.eval.report import markdown_table, save_figure  # noqa: E402
from selfimprove.methods.r3 import R3, R3Recipe  # noqa: E402
from selfimprove.methods.sft import SFT  # noqa: E402
from selfimprove.policy.tiny import write_tiny_model  # noqa: E402
from selfimprove.train.runlog import read_metrics  # noqa: E402
from common import BEGAN, RESULTS, chain_task, line_bar, log, repo_relative_paths, stderr  # noqa: E402  (bench/common.py)

COUNTDOWN = {"name": "countdown", "params": {"num_numbers": 3, "min_number": 1, "max_number": 20, "min_target": 10,
                                              "max_target": 50, "format": "steps"}}
SFT_POOL = 2000
ARMS = ("sft", "rl", "r3-staged", "r3-mixed", "r3-adaptive")





def max_tokens(task: dict[str, Any]) -> int:
    return 8 * task["params"]["num_steps"] + 8 if task["name"] == "chain" else 32


def ppo_loss(vf_coef: float) -> dict[str, Any]:
    """R^3's PPO loss (the recipe's default) with the value-loss weight `vf_coef`."""
    return {**R3Recipe.model_fields["loss"].default_factory().model_dump(), "vf_coef": vf_coef}


def budget(args: argparse.Namespace, task: dict[str, Any]) -> int:
    """Sampled tokens per RL arm: `--budget`, or `--countdown-budget` on Countdown when given."""
    return args.countdown_budget if task["name"] == "countdown" and args.countdown_budget else args.budget


def sft(root: Path, name: str, task: dict[str, Any], steps: int, test_problems: int, model: str | None = None,
        seed: int = 0) -> dict[str, Any]:
    out = root / name
    if not (out / "summary.json").is_file():
        init = root / "init"
        if model is None and not (init / "config.json").is_file():
            write_tiny_model(init, "default", 0)
        recipe = validate(SFTRecipe, {
            "run_dir": str(out), "seed": seed, "model": {"path": model or str(init)}, "task": task, "steps": steps,
            "batch_size": 64, "num_problems": SFT_POOL,
            "optim": ({"lr": 1e-3, "warmup_steps": 50, "schedule": "cosine", "min_lr_ratio": 0.1, "micro_batch_size": 256}
                      if model is None else {"lr": 5e-5, "warmup_steps": 5, "micro_batch_size": 256}),
            "schedule": {"eval_every": 0, "checkpoint_every": 100},
            "eval": {"split": "test", "num_problems": test_problems, "max_new_tokens": max_tokens(task)}})
        log(f"{name}: SFT {steps} steps")
        with line_bar(name, steps) as on_step:
            SFT(recipe).run(on_step)
    return json.loads((out / "summary.json").read_text())


def sweep(args: argparse.Namespace, root: Path) -> tuple[int, list[dict[str, Any]]]:
    rows = []
    for steps in args.sweep:
        # the folder names the SFT steps, so a sweep at other steps never reuses these runs
        s = sft(root / "sweep", f"chain{steps}-sft{args.sweep_steps}", chain_task(steps), args.sweep_steps, args.sweep_problems)
        rows.append({"num_steps": steps, "sft_accuracy": s["accuracy"], "seconds": s["train_seconds"]})
        log(f"sweep: chain of {steps} steps: SFT greedy {s['accuracy']:.1%}")
    ok = [r["num_steps"] for r in rows if r["sft_accuracy"] >= args.min_sft_accuracy]
    return (max(ok) if ok else min(args.sweep)), rows


def rl_arm(args: argparse.Namespace, root: Path, task: dict[str, Any], base: str, arm: str, seed: int,
           stage_steps: int) -> dict[str, Any]:
    out = root / arm / f"seed{seed}"
    curriculum = {"rl": "none", "r3-staged": "staged", "r3-mixed": "mixed", "r3-adaptive": "adaptive"}[arm]
    recipe = validate(R3Recipe, {
        "run_dir": str(out), "seed": seed, "model": {"path": base}, "task": task, "steps": 10_000,
        "prompts_per_step": 16, "first_problem": SFT_POOL, "max_sampled_tokens": budget(args, task),
        "sampling": {"n": 8, "temperature": 1.0, "max_new_tokens": max_tokens(task)},
        "optim": {"lr": args.lr, "warmup_steps": 5, "micro_batch_size": 128},
        "schedule": {"eval_every": args.eval_every, "eval_problems": 200, "checkpoint_every": 20},
        "eval": {"split": "test", "num_problems": args.test_problems, "max_new_tokens": max_tokens(task)},
        "loss": ppo_loss(args.vf_coef),
        "r3": {"curriculum": curriculum, "pool": args.pool, "stage_steps": stage_steps}})
    if not (out / "summary.json").is_file():
        log(f"{task['name']} {arm} seed {seed}: until {budget(args, task):,} sampled tokens")
        with line_bar(f"{arm} s{seed}", None, keys=("train/loss", "train/reward", "train/k_mean")) as on_step:
            R3(recipe).run(on_step)
    return json.loads((out / "summary.json").read_text())


def run_task(args: argparse.Namespace, root: Path, task: dict[str, Any]) -> list[dict[str, Any]]:
    base_summary = sft(root, "base", task, args.sft_steps, args.test_problems)
    base = str(root / "base" / "final")
    log(f"{task['name']}: base greedy {base_summary['accuracy']:.1%}")
    rows = []
    for seed in args.seeds:
        done: dict[str, dict[str, Any]] = {"rl": rl_arm(args, root, task, base, "rl", seed, 1)}
        steps = int(done["rl"]["steps"])
        # staged: one stage per demonstration step, spread over the steps RL from s_0 took at this budget
        demo_steps = task["params"]["num_steps"] if task["name"] == "chain" else task["params"]["num_numbers"] - 1
        stage_steps = args.stage_steps or max(1, steps // demo_steps)
        for arm in ARMS[2:]:
            done[arm] = rl_arm(args, root, task, base, arm, seed, stage_steps)
        done["sft"] = sft(root / "sft", f"seed{seed}", task, steps, args.test_problems, model=base, seed=seed)
        for arm in ARMS:
            s = done[arm]
            rows.append({"arm": arm, "task": task["name"], "seed": seed, "accuracy": s["accuracy"],
                         "tokens": int(s.get("sampled_tokens", 0)), "seconds": s["train_seconds"], "steps": s["steps"],
                         "run_dir": str(root / arm / f"seed{seed}")})
            log(f"{task['name']} seed {seed} {arm}: {s['accuracy']:.1%} after {s['steps']} steps, "
                f"{int(s.get('sampled_tokens', 0)):,} tokens, {s['train_seconds']:.0f}s")
    rows.insert(0, {"arm": "base (SFT)", "task": task["name"], "seed": None, "accuracy": base_summary["accuracy"],
                    "tokens": 0, "seconds": base_summary["train_seconds"], "steps": 0, "run_dir": str(root / "base")})
    return rows



def rollout_stats(run_dir: Path, prompt_lines: int | None = None) -> dict[str, Any] | None:
    """From a run's trained rollouts: the share of groups holding a right answer, the share of right
    samples, and the success rate from each start state k (runs made before rows said `start_k` count
    the prompt's lines past `prompt_lines`, the bare prompt's: RL from s_0's fewest)."""
    path = run_dir / "buffers" / "rollouts.jsonl"
    if not path.is_file():
        return None
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if not records:
        return None
    fewest = min(r["prompt"].count("\n") for r in records) if prompt_lines is None else prompt_lines
    groups: dict[tuple[int, int], bool] = {}
    by_k: dict[int, list[bool]] = {}
    for r in records:
        groups[(r["step"], r["group"])] = groups.get((r["step"], r["group"]), False) or r["correct"]
        by_k.setdefault(r.get("start_k", r["prompt"].count("\n") - fewest), []).append(r["correct"])
    return {"groups_solved": sum(groups.values()) / len(groups), "sample_accuracy": sum(r["correct"] for r in records) / len(records),
            "success_by_k": {k: sum(v) / len(v) for k, v in sorted(by_k.items())}, "samples_by_k": {k: len(v) for k, v in sorted(by_k.items())},
            "prompt_lines": fewest}


def pool_by_start_state(runs: list[dict[str, Any]]) -> dict[str, dict[int, float]]:
    """Seeds pooled per start state k: the success rate weighted by each run's samples from k, and k's
    share of all the samples."""
    ks = sorted({k for r in runs for k in r["success_by_k"]})
    counts = {k: sum(r["samples_by_k"].get(k, 0) for r in runs) for k in ks}
    total = max(1, sum(counts.values()))
    return {"success_by_k": {k: sum(r["success_by_k"].get(k, 0) * r["samples_by_k"].get(k, 0) for r in runs) / max(1, counts[k])
                             for k in ks},
            "share_by_k": {k: n / total for k, n in counts.items()}}


def report(args: argparse.Namespace, rows: list[dict[str, Any]], sweep_rows: list[dict[str, Any]], length: int,
           seconds: float) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    table = []
    for task in dict.fromkeys(r["task"] for r in rows):
        for arm in ("base (SFT)", *ARMS):
            mine = [r for r in rows if r["task"] == task and r["arm"] == arm]
            if not mine:
                continue
            acc = [r["accuracy"] for r in mine]
            per_seed = ", ".join(f"{100 * r['accuracy']:.1f}" for r in mine)
            mean = f"{100 * statistics.fmean(acc):.1f}" + (f" ± {100 * stderr(acc):.1f}" if len(acc) > 1 else "")
            table.append([task, arm, mean, per_seed, f"{statistics.fmean(r['tokens'] for r in mine):,.0f}",
                          f"{statistics.fmean(r['steps'] for r in mine):.0f}", f"{statistics.fmean(r['seconds'] for r in mine):.0f}"])
    verdicts = []
    for task in dict.fromkeys(r["task"] for r in rows):
        for seed in args.seeds:
            acc = {r["arm"]: r["accuracy"] for r in rows if r["task"] == task and r["seed"] == seed}
            if {"r3-mixed", "rl", "sft"} <= acc.keys():
                verdicts.append(f"- {task}, seed {seed}: R^3 mixed {100 * acc['r3-mixed']:.1f} vs RL {100 * acc['rl']:.1f} "
                                f"({100 * (acc['r3-mixed'] - acc['rl']):+.1f}) vs SFT {100 * acc['sft']:.1f}: paper's order "
                                f"(mixed > RL > SFT) {'held' if acc['r3-mixed'] > acc['rl'] > acc['sft'] else 'did not hold'}")
    stats: dict[tuple[str, str], dict[str, Any]] = {}
    for task in dict.fromkeys(r["task"] for r in rows):
        lines = None  # the bare prompt's line count, from RL from s_0 (ARMS[1], first below)
        for arm in ARMS[1:]:
            runs = [rollout_stats(Path(r["run_dir"]), lines) for r in rows if r["task"] == task and r["arm"] == arm]
            runs = [r for r in runs if r]
            if runs:
                lines = runs[0]["prompt_lines"] if lines is None else lines
                stats[(task, arm)] = {"groups_solved": statistics.fmean(r["groups_solved"] for r in runs),
                                      "sample_accuracy": statistics.fmean(r["sample_accuracy"] for r in runs), **pool_by_start_state(runs)}
    # The runs' own seconds, so a report written from finished runs still says what they cost.
    per_task = {t: sum(r["seconds"] for r in rows if r["task"] == t) for t in dict.fromkeys(r["task"] for r in rows)}
    sweep_seconds = sum(r.get("seconds", 0.0) for r in sweep_rows)
    cost = ", ".join(f"{t} {v / 60:.0f} min" for t, v in per_task.items()) + (f", the sweep {sweep_seconds / 60:.0f} min" if sweep_seconds else "")
    md = ["# R^3 against RL from s_0 and SFT (tiny model)\n",
          f"Training time, the runs' own seconds summed (one torch thread each; a task's runs one after another): {cost}. "
          f"This invocation: {seconds / 60:.0f} min of wall time.\n",
          f"Command: `OMP_NUM_THREADS=1 .venv/bin/python bench/r3.py {' '.join(repo_relative_paths(sys.argv[1:]))}`. Same SFT base per task, "
          f"{args.budget:,} sampled tokens per RL arm on chains and {budget(args, COUNTDOWN):,} on Countdown, seeds {args.seeds}, greedy accuracy on {args.test_problems} held-out "
          f"problems (mean ± standard error over seeds, then per seed). "
          + (f"Chain length {length} from the sweep below (the sweep trains {args.sweep_steps} SFT steps, the base "
             f"{args.sft_steps}). " if "chain" in args.tasks else f"The base trains {args.sft_steps} SFT steps. ")
          + f"PPO lr {args.lr:g} (chosen on train problems by `bench/r3_tune.py`), vf_coef {args.vf_coef:g}. Judgement: "
          + ("the continuation alone (issue 26's fix: a state's prefix never answers for it).\n" if args.judgement == "continuation"
             else "prefix and continuation together (runs from before issue 26's fix).\n"),
          markdown_table(["task", "arm", "accuracy %", "per seed", "sampled tokens", "steps", "seconds"], table),
          "\n## Paper's direction per seed\n", "\n".join(verdicts) + "\n",
          "\n## Where the training samples were right (the runs' rollouts, every seed pooled)\n",
          "Groups with a right answer and right samples (each RL arm), the success rate from each start state k "
          "(k demonstration steps given; the held-out task starts at k = 0), and the share of the samples drawn from each.\n",
          markdown_table(["task", "arm", "groups with a right answer %", "right samples %", "success % by start state (k: %)",
                          "samples by start state (k: %)"],
                         [[t, a, f"{100 * st['groups_solved']:.0f}", f"{100 * st['sample_accuracy']:.1f}",
                           ", ".join(f"{k}: {100 * v:.0f}" for k, v in st["success_by_k"].items()),
                           ", ".join(f"{k}: {100 * v:.0f}" for k, v in st["share_by_k"].items())] for (t, a), st in stats.items()]),
          "\n## Chain length sweep (SFT only)\n",
          markdown_table(["steps per chain", "SFT greedy %"], [[r["num_steps"], f"{100 * r['sft_accuracy']:.1f}"] for r in sweep_rows])]
    (RESULTS / f"{args.out}.md").write_text("\n".join(md))
    setup = {"tasks": [chain_task(length), COUNTDOWN], "budget": args.budget, "countdown_budget": budget(args, COUNTDOWN), "seeds": args.seeds, "pool": args.pool,
             "stage_steps": args.stage_steps or "RL's steps / demonstration steps", "lr": args.lr, "sft_steps": args.sft_steps, "test_problems": args.test_problems,
             "ppo": f"gae, gamma 1, lambda 0.95, clip 0.2, vf_coef {args.vf_coef:g}, 2 epochs, KL 0.05 (k1) in the reward, value head",
             "sweep": sweep_rows, "chain_steps": length, "wall_seconds": round(seconds),
             # issue 26: the continuation alone is judged (an empty one scores 0, partial reward only for a number it wrote)
             "judgement": args.judgement,
             "rollouts": {f"{t}/{a}": v for (t, a), v in stats.items()}}
    (RESULTS / f"{args.out}.json").write_text(json.dumps(repo_relative_paths({"rows": [{k: r[k] for k in ("arm", "task", "seed", "accuracy", "tokens", "seconds")}
                                                          for r in rows], "setup": setup}), indent=2))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(dict.fromkeys(r["task"] for r in rows))
    fig, axes = plt.subplots(2, len(tasks), figsize=(6 * len(tasks), 7), squeeze=False)
    for col, task in enumerate(tasks):
        for arm in ARMS[1:]:
            runs = [r for r in rows if r["task"] == task and r["arm"] == arm]
            if not runs:
                continue
            metrics = read_metrics(Path(runs[0]["run_dir"]) / "metrics.jsonl")
            evals = [(m["train/sampled_tokens_total"], m["eval/accuracy"]) for m in metrics if "eval/accuracy" in m]
            if evals:
                axes[0][col].plot(*zip(*evals), marker="o", label=arm)
            ks = [(m["train/sampled_tokens_total"], m["train/k_mean"]) for m in metrics if "train/k_mean" in m]
            if ks:
                axes[1][col].plot(*zip(*ks), label=arm)
        axes[0][col].set_title(f"{task}: held-out greedy accuracy (seed {args.seeds[0]})")
        axes[1][col].set_title(f"{task}: mean start state k trained on")
        for ax in axes[:, col]:
            ax.set_xlabel("sampled tokens")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
    save_figure(fig, RESULTS / f"{args.out}.png")


def judgement_of(root: Path) -> str:
    """How the runs in `root` were judged. Only a folder begun by this code is marked "continuation" (issue 26's
    fix: the continuation alone is judged); a folder of older runs has no marker and reports the old judgement."""
    marker = root / "JUDGEMENT"
    if not root.exists() or not any(root.iterdir()):
        root.mkdir(parents=True, exist_ok=True)
        marker.write_text("continuation\n")
    return marker.read_text().strip() if marker.is_file() else "prefix + continuation (before issue 26)"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run-dir", default="runs/r3-bench")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--sweep", type=int, nargs="+", default=[4, 6, 8, 10])
    p.add_argument("--sweep-steps", type=int, default=0, help="SFT steps of the sweep's models (0: --sft-steps, the base's)")
    p.add_argument("--sweep-problems", type=int, default=200)
    p.add_argument("--min-sft-accuracy", type=float, default=0.10)
    p.add_argument("--sft-steps", type=int, default=300,
                   help="SFT steps of the base (and the sweep): 300 leaves 6-step chains at ~15%%, where RL from s_0 struggles; "
                        "at 600 the base solved 68%% of them and 60%% of 8-step chains")
    p.add_argument("--budget", type=int, default=400_000)
    p.add_argument("--countdown-budget", type=int, default=0, help="Countdown's budget per RL arm (0: --budget)")
    p.add_argument("--pool", type=int, default=512)
    p.add_argument("--stage-steps", type=int, default=0, help="staged: steps per stage (0: RL's steps / demonstration steps)")
    p.add_argument("--lr", type=float, default=1e-5,
                   help="PPO's step size: 1e-5 was chosen by bench/r3_tune.py on train problems (5e-5 lowered accuracy)")
    p.add_argument("--vf-coef", type=float, default=5.0, help="R^3's value-loss weight (5)")
    p.add_argument("--eval-every", type=int, default=25)
    p.add_argument("--test-problems", type=int, default=500)
    p.add_argument("--tasks", nargs="+", default=["chain", "countdown"], choices=["chain", "countdown"])
    p.add_argument("--out", default="r3", help="the results' file stem under bench/results (r3_sft600: the 600-step base's run)")
    p.add_argument("--quick", action="store_true", help="a smoke run: tiny sizes everywhere")
    args = p.parse_args(argv)
    args.sweep_steps = args.sweep_steps or args.sft_steps
    if args.quick:
        args.sweep, args.sweep_steps, args.sweep_problems, args.sft_steps = [4, 6], 30, 20, 40
        args.budget, args.pool, args.test_problems, args.seeds, args.eval_every = 4000, 16, 20, [0], 2
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    root = Path(args.run_dir)
    args.judgement = judgement_of(root)
    length, sweep_rows = sweep(args, root) if "chain" in args.tasks else (0, [])
    rows: list[dict[str, Any]] = []
    for name in args.tasks:
        task = chain_task(length) if name == "chain" else COUNTDOWN
        # a chain length and a base's SFT steps have their own folder, so no run is reused across them
        rows += run_task(args, root / f"{f'chain{length}' if name == 'chain' else name}-sft{args.sft_steps}", task)
    report(args, rows, sweep_rows, length, time.time() - BEGAN)
    log(f"wrote {RESULTS / args.out}.md, .json and .png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
