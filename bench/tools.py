"""Tools against none: the tiny model on long arithmetic chains, with a calculator or without, at equal
training (the same SFT steps, then GRPO to the same number of sampled tokens), and with a calculator
that lies.

Arms (each per seed; a stage whose outputs exist is skipped, every training run resumes itself):
- `no_tools`: SFT on the chain's plain demonstrations (`7+5=12` per line), then GRPO;
- `tools`: SFT on worked conversations with `calc` (`<<calc 7+5>>=12`, one call per step, then the
  final number), then GRPO through the same environment; the environment's token limit counts the
  model's tokens only (tool results are not sampled), as the budget does;
- `lying`: the `tools` SFT model, then GRPO with a calculator whose result is wrong 20% of the time
  (`env.params.faults`), evaluated with that calculator: what does the policy learn from a tool that lies?
  The `tools` models are also evaluated with the lying calculator, and the `lying` one with the honest one.

GRPO's step size is chosen per arm on validation problems of the *train* split (`--tune`: each candidate
from the seed-0 SFT base to the full budget; the test split is never read while choosing). Every model
is evaluated greedily on `--test-problems` held-out problems. The report
(`bench/results/tools.{md,json,png}`) gives accuracy (mean ± standard error over seeds, and per seed),
the sampled tokens of training, the tokens written per problem at evaluation, tool calls per problem,
and for the lying calculator how the policy behaves: calls repeated with the same expression, and
final answers that differ from the last result the tool gave.

    OMP_NUM_THREADS=1 .venv/bin/python bench/tools.py --tune no_tools > runs/tools-bench/tune0.log 2>&1 &
    OMP_NUM_THREADS=1 .venv/bin/python bench/tools.py --tune tools > runs/tools-bench/tune1.log 2>&1 &
    OMP_NUM_THREADS=1 .venv/bin/python bench/tools.py --seeds 0 > runs/tools-bench/seed0.log 2>&1 &   # after both
    OMP_NUM_THREADS=1 .venv/bin/python bench/tools.py --seeds 1 > runs/tools-bench/seed1.log 2>&1 &
    .venv/bin/python bench/tools.py --report          # once both are done: the joint table
    .venv/bin/python bench/tools.py --quick --run-dir runs/tools-quick   # minutes: a smoke run
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

from selfimprove.config import EvalConfig, EnvSpec, RLRecipe, SFTRecipe, validate  # noqa: E402
from selfimprove.eval.report import markdown_table, save_figure  # noqa: E402
from selfimprove.methods.rl import RL  # noqa: E402
from selfimprove.methods.sft import SFT  # noqa: E402
from selfimprove.policy.tiny import write_tiny_model  # noqa: E402
from selfimprove.train.runlog import read_metrics  # noqa: E402
from common import BEGAN, RESULTS, chain_task, line_bar, log, repo_relative_paths, stderr  # noqa: E402  (bench/common.py)

SFT_POOL = 2000
LIE_RATE = 0.2
VALIDATION = 1_000_000  # tuning evaluates train problems from here on: far past every index training draws


def env(args: argparse.Namespace, lies: float = 0.0) -> dict[str, Any]:
    """The calculator environment: a call per step plus the answer, and room for a few more."""
    spec = {"name": "tools", "tools": ["calc"], "max_turns": args.steps + 3, "max_tokens": args.tool_tokens}
    if lies:
        spec["params"] = {"faults": {"calc": lies}}
    return spec


def plain_tokens(args: argparse.Namespace) -> int:
    return 8 * args.steps + 8  # a step line is at most 7 characters and a newline


def sft(args: argparse.Namespace, root: Path, arm: str, seed: int) -> Path:
    out = root / f"{arm}-sft" / f"seed{seed}"
    if not (out / "summary.json").is_file():
        init = root / "init" / f"seed{seed}"
        if not (init / "config.json").is_file():
            write_tiny_model(init, "default", seed)
        fields: dict[str, Any] = {
            "run_dir": str(out), "seed": seed, "model": {"path": str(init)}, "task": chain_task(args.steps),
            "steps": args.sft_steps, "batch_size": 64, "num_problems": SFT_POOL,
            "optim": {"lr": 1e-3, "warmup_steps": 50, "schedule": "cosine", "min_lr_ratio": 0.1, "micro_batch_size": 256},
            "schedule": {"eval_every": 0, "checkpoint_every": 100},
            "eval": {"split": "test", "num_problems": 100, "max_new_tokens": plain_tokens(args) if arm == "no_tools" else args.turn_tokens}}
        if arm == "tools":
            fields["env"] = env(args)
        log(f"{arm} seed {seed}: SFT {args.sft_steps} steps")
        with line_bar(f"{arm}-sft s{seed}", args.sft_steps) as on_step:
            SFT(validate(SFTRecipe, fields)).run(on_step)
    return out / "final"


def grpo(args: argparse.Namespace, root: Path, arm: str, base: Path, seed: int, lr: float) -> Path:
    """GRPO from `base` until the budget. Its periodic evaluation reads validation problems of the train
    split (the curves; the tuning reads its final model there too): the test split is read only by
    `evaluate`, after training. A run is named by its arm, step size and seed, so the tuning's run at the
    chosen step size is seed 0's run."""
    out = root / "grpo" / f"{arm}-lr{lr:g}" / f"seed{seed}"
    tools = arm != "no_tools"
    fields: dict[str, Any] = {
        "run_dir": str(out), "seed": seed, "model": {"path": str(base)}, "task": chain_task(args.steps), "steps": 100_000,
        "prompts_per_step": 16, "first_problem": SFT_POOL, "max_sampled_tokens": args.budget,
        "sampling": {"n": 8, "temperature": 1.0, "max_new_tokens": args.turn_tokens if tools else plain_tokens(args)},
        "optim": {"lr": lr, "warmup_steps": 5, "micro_batch_size": 128},
        "loss": {"estimator": "grpo"},
        "schedule": {"eval_every": args.eval_every, "eval_problems": 100, "checkpoint_every": 10},
        "eval": {"split": "train", "start": VALIDATION, "num_problems": 100,
                 "max_new_tokens": args.turn_tokens if tools else plain_tokens(args)}}
    if tools:
        fields["env"] = env(args, LIE_RATE if arm == "lying" else 0.0)
    if not (out / "summary.json").is_file():
        log(f"{arm} seed {seed}: GRPO (lr {lr:g}) until {args.budget:,} sampled tokens")
        with line_bar(f"{arm} s{seed}", None, keys=("train/reward", "train/tool_calls", "eval/accuracy")) as on_step:
            RL(validate(RLRecipe, fields)).run(on_step)
    return out


def evaluate(args: argparse.Namespace, model: Path, out: Path, spec: dict[str, Any] | None, seed: int,
             validation: bool = False) -> dict[str, Any]:
    """Greedy accuracy of a model on the held-out problems (with an environment: conversations), the
    tokens it wrote and the tool calls it made per problem, and how it used the tool; cached in `out`."""
    if out.is_file():
        return json.loads(out.read_text())
    from selfimprove.eval.evaluate import evaluate_with
    from selfimprove.policy.hf import HFPolicy
    from selfimprove.rollout.conversation import env_run
    from selfimprove.tasks import make_task

    task = make_task("chain", chain_task(args.steps)["params"])
    policy = HFPolicy.load(model, seed=seed)
    config = EvalConfig(num_problems=args.test_problems, batch_size=250,
                        max_new_tokens=args.turn_tokens if spec else plain_tokens(args))
    run = env_run(validate(EnvSpec, spec), task, seed) if spec else None
    began = time.time()
    problems = (task.distinct_problems("train", args.tune_problems, VALIDATION) if validation
                else task.distinct_problems("test", args.test_problems))
    result = evaluate_with(policy, task, problems, config, seed, env=run)
    row = {"accuracy": result.accuracy, "tokens_per_problem": result.generated_tokens / result.num_problems,
           "seconds": round(time.time() - began, 1), **behaviour(result.records)}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(row, indent=2))
    return row


def behaviour(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Tool use in evaluation records: calls per problem, the share of calls that repeat an expression
    already called in the conversation, and of answers that are not the last result the tool gave."""
    calls = repeats = answered = overridden = 0
    for r in records:
        seen: set[str] = set()
        last = None
        for m in r.get("messages", []):
            for call in m.get("tool_calls") or []:
                expression = str(call["function"]["arguments"].get("expression", ""))
                calls += 1
                repeats += expression in seen
                seen.add(expression)
            if m.get("role") == "tool":
                last = m.get("content")
        said = [m for m in r.get("messages", []) if m.get("role") == "assistant"]
        if said and not said[-1].get("tool_calls") and last is not None:
            answered += 1
            overridden += said[-1].get("content", "").strip() != str(last).strip()
    n = max(1, len(records))
    return {"tool_calls_per_problem": calls / n, "repeated_calls": repeats / max(1, calls),
            "answers_not_last_result": overridden / max(1, answered)}


def tune(args: argparse.Namespace, root: Path, arm: str) -> dict[str, Any]:
    """GRPO's step size for an arm, chosen on validation problems of the *train* split (far past every
    index training draws): each candidate from the seed-0 SFT base to the full budget."""
    out = root / "tune" / f"{arm}.json"
    if out.is_file():
        return json.loads(out.read_text())
    base = sft(args, root, arm, 0)
    spec = None if arm == "no_tools" else env(args)
    rows = []
    for lr in args.tune_lrs:
        run = grpo(args, root, arm, base, 0, lr)
        score = evaluate(args, run / "final", root / "tune" / "eval" / f"{arm}-lr{lr:g}.json", spec, 0, validation=True)
        rows.append({"lr": lr, "validation_accuracy": score["accuracy"], "tool_calls_per_problem": score["tool_calls_per_problem"]})
        log(f"tune {arm}: lr {lr:g} -> validation {score['accuracy']:.1%}")
    base_score = evaluate(args, base, root / "tune" / "eval" / f"{arm}-sft.json", spec, 0, validation=True)
    best = max(rows, key=lambda r: (r["validation_accuracy"], -r["lr"]))
    result = {"arm": arm, "rows": rows, "sft_validation_accuracy": base_score["accuracy"], "lr": best["lr"]}
    out.write_text(json.dumps(result, indent=2))
    return result


def chosen_lr(root: Path, arm: str, wait: float = 6 * 3600) -> float:
    """The tuned step size of an arm; waits (up to `wait` seconds) for a tuning running beside this process."""
    path = root / "tune" / f"{'tools' if arm == 'lying' else arm}.json"
    began = time.time()
    while not path.is_file():
        if time.time() - began > wait:
            raise SystemExit(f"{path} is missing: run `bench/tools.py --tune {arm}` first (GRPO's step size is chosen "
                             "on validation problems of the train split)")
        log(f"waiting for {path} (the tuning of {arm})")
        time.sleep(60)
    return float(json.loads(path.read_text())["lr"])


def run_seed(args: argparse.Namespace, root: Path, seed: int) -> list[dict[str, Any]]:
    rows = []
    honest, lying = env(args), env(args, LIE_RATE)
    for arm in ("no_tools", "tools"):
        base = sft(args, root, arm, seed)
        spec = None if arm == "no_tools" else honest
        rows.append({"arm": f"{arm} (SFT)", "stage": "sft", "train_tokens": 0,
                     **evaluate(args, base, root / "eval" / f"{arm}-sft-seed{seed}.json", spec, seed)})
        if arm == "tools":
            rows.append({"arm": "tools (SFT), lying calc", "stage": "sft", "train_tokens": 0,
                         **evaluate(args, base, root / "eval" / f"tools-sft-lying-seed{seed}.json", lying, seed)})
        trained = grpo(args, root, arm, base, seed, chosen_lr(root, arm))
        summary = json.loads((trained / "summary.json").read_text())
        rows.append({"arm": arm, "stage": "grpo", "train_tokens": summary["sampled_tokens"], "steps": summary["steps"],
                     "train_seconds": summary["train_seconds"], "run_dir": str(trained),
                     **evaluate(args, trained / "final", root / "eval" / f"{arm}-seed{seed}.json", spec, seed)})
        if arm == "tools":
            rows.append({"arm": "tools, lying calc", "stage": "grpo", "train_tokens": summary["sampled_tokens"],
                         **evaluate(args, trained / "final", root / "eval" / f"tools-lying-seed{seed}.json", lying, seed)})
            base_tools = base
    trained = grpo(args, root, "lying", base_tools, seed, chosen_lr(root, "lying"))
    summary = json.loads((trained / "summary.json").read_text())
    rows.append({"arm": "lying", "stage": "grpo", "train_tokens": summary["sampled_tokens"], "steps": summary["steps"],
                 "train_seconds": summary["train_seconds"], "run_dir": str(trained),
                 **evaluate(args, trained / "final", root / "eval" / f"lying-seed{seed}.json", lying, seed)})
    rows.append({"arm": "lying, honest calc", "stage": "grpo", "train_tokens": summary["sampled_tokens"],
                 **evaluate(args, trained / "final", root / "eval" / f"lying-honest-seed{seed}.json", honest, seed)})
    for r in rows:
        r.update({"task": f"chain{args.steps}", "seed": seed})
        log(f"seed {seed} {r['arm']}: {r['accuracy']:.1%}, {r['tool_calls_per_problem']:.2f} calls per problem")
    (root / f"rows-seed{seed}.json").write_text(json.dumps(rows, indent=2))
    return rows


ORDER = ("no_tools (SFT)", "no_tools", "tools (SFT)", "tools", "tools (SFT), lying calc", "tools, lying calc", "lying",
         "lying, honest calc")


def report(args: argparse.Namespace, root: Path, seconds: float) -> None:
    rows = [r for path in sorted(root.glob("rows-seed*.json")) for r in json.loads(path.read_text())]
    if not rows:
        raise SystemExit(f"no finished seed under {root}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    table = []
    for arm in ORDER:
        mine = [r for r in rows if r["arm"] == arm]
        if not mine:
            continue
        acc = [r["accuracy"] for r in mine]
        mean = f"{100 * statistics.fmean(acc):.1f}" + (f" ± {100 * stderr(acc):.1f}" if len(acc) > 1 else "")
        table.append([arm, mean, ", ".join(f"{100 * a:.1f}" for a in acc), f"{statistics.fmean(r['train_tokens'] for r in mine):,.0f}",
                      f"{statistics.fmean(r['tokens_per_problem'] for r in mine):.1f}",
                      f"{statistics.fmean(r['tool_calls_per_problem'] for r in mine):.2f}",
                      f"{100 * statistics.fmean(r['repeated_calls'] for r in mine):.1f}",
                      f"{100 * statistics.fmean(r['answers_not_last_result'] for r in mine):.1f}"])
    seeds = sorted({r["seed"] for r in rows})
    gaps = []
    for seed in seeds:
        acc = {r["arm"]: r["accuracy"] for r in rows if r["seed"] == seed}
        if {"tools", "no_tools"} <= acc.keys():
            gaps.append(acc["tools"] - acc["no_tools"])
    gap = statistics.fmean(gaps) if gaps else float("nan")
    verdict = (f"The tool arm beats the no-tool arm by {100 * gap:+.1f} points on average over seeds {seeds} "
               f"({', '.join(f'{100 * g:+.1f}' for g in gaps)}): the issue asks for at least +5, "
               f"{'met' if gaps and min(gaps) >= 0.05 else 'not met on every seed'}.")
    lying = lying_summary(args, rows)
    train_seconds = sum(float(r.get("train_seconds", 0.0)) for r in rows)
    tuned = {arm: json.loads((root / "tune" / f"{arm}.json").read_text()) for arm in ("no_tools", "tools")
             if (root / "tune" / f"{arm}.json").is_file()}
    tuning = [[arm, f"{r['lr']:g}", f"{100 * r['validation_accuracy']:.1f}", f"{100 * t['sft_validation_accuracy']:.1f}",
               "chosen" if r["lr"] == t["lr"] else ""] for arm, t in tuned.items() for r in t["rows"]]
    lrs = ", ".join(f"{arm} {t['lr']:g}" for arm, t in tuned.items())
    md = ["# Tools against none: the tiny model with a calculator (chains)\n",
          f"Command: `OMP_NUM_THREADS=1 .venv/bin/python bench/tools.py` per seed, then `--report`. Task: chains of "
          f"{args.steps} operations (+ - * on 1..9, values up to 999), {args.sft_steps} SFT steps (batch 64, a pool of "
          f"{SFT_POOL:,} demonstrations) from a new tiny model (2.65M parameters), then GRPO (16 prompts x 8 samples, "
          f"lr per arm chosen on validation problems of the train split: {lrs}; the lying arm uses the tool arm's) until "
          f"{args.budget:,} sampled tokens; greedy accuracy on {args.test_problems} held-out problems, "
          f"mean ± standard error over seeds {seeds}, then per seed. The tool arm's conversations: one `calc` call per turn, "
          f"at most {args.steps + 3} turns of {args.turn_tokens} tokens and {args.tool_tokens} model tokens in all (tool "
          f"results are not sampled, so they do not count). Lying calculator: {LIE_RATE:.0%} of results moved by 1-20%. "
          f"GRPO training time summed over runs: {train_seconds / 60:.0f} min; this invocation {seconds / 60:.0f} min.\n",
          markdown_table(["arm", "accuracy %", "per seed", "sampled tokens (training)", "tokens per problem (eval)",
                          "tool calls per problem", "repeated calls %", "answers not the last result %"], table),
          f"\n{verdict}\n",
          "\n## What the policy learns from a calculator that lies\n", lying + "\n",
          f"\n## GRPO's step size, chosen on {args.tune_problems} validation problems of the train split (seed 0, the "
          f"full budget each)\n",
          markdown_table(["arm", "lr", "validation accuracy % after GRPO", "validation accuracy % of the SFT base", ""], tuning)]
    (RESULTS / f"{args.out}.md").write_text("\n".join(md))
    keep = ("arm", "task", "seed", "accuracy", "train_tokens", "tokens_per_problem", "tool_calls_per_problem", "repeated_calls",
            "answers_not_last_result", "stage", "steps", "train_seconds")
    data = {"rows": [{"tokens": r["train_tokens"], **{k: r[k] for k in keep if k in r}} for r in rows],
            "setup": {"task": chain_task(args.steps), "sft_steps": args.sft_steps, "sft_pool": SFT_POOL, "budget": args.budget,
                      "lr": {arm: t["lr"] for arm, t in tuned.items()}, "tuning": tuned, "seeds": seeds,
                      "test_problems": args.test_problems, "lie_rate": LIE_RATE,
                      "env": env(args), "turn_tokens": args.turn_tokens, "plain_tokens": plain_tokens(args),
                      "gap_points": 100 * gap, "wall_seconds": round(seconds), "train_seconds": round(train_seconds)}}
    (RESULTS / f"{args.out}.json").write_text(json.dumps(repo_relative_paths(data), indent=2))
    plot(args, rows)


def lying_summary(args: argparse.Namespace, rows: list[dict[str, Any]]) -> str:
    """The lying arm against the honest-trained model under the same lies, and what would be expected if
    the policy simply trusted every result."""
    def mean(arm: str, key: str) -> float:
        values = [r[key] for r in rows if r["arm"] == arm]
        return statistics.fmean(values) if values else float("nan")

    trusting = (1 - LIE_RATE) ** args.steps
    return (f"A policy that calls once per step and trusts every result is right only when all {args.steps} results are "
            f"honest: {100 * trusting:.1f}%. With the lying calculator the tool SFT model scores "
            f"{100 * mean('tools (SFT), lying calc', 'accuracy'):.1f}%, the honest-trained GRPO model "
            f"{100 * mean('tools, lying calc', 'accuracy'):.1f}%, and GRPO trained under the lies "
            f"{100 * mean('lying', 'accuracy'):.1f}% ({mean('lying', 'tool_calls_per_problem'):.2f} calls per problem, "
            f"{100 * mean('lying', 'repeated_calls'):.1f}% of them repeating an expression, against "
            f"{100 * mean('tools (SFT), lying calc', 'repeated_calls'):.1f}% before; with the honest calculator again it "
            f"scores {100 * mean('lying, honest calc', 'accuracy'):.1f}%). Learning a defence means writing something the "
            "demonstrations never show (calling again and comparing, or working a step out): GRPO can only reinforce "
            "what its samples already do, and the lies fall on the samples of a group at random, whatever they write.")


def plot(args: argparse.Namespace, rows: list[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for arm in ("no_tools", "tools", "lying"):
        runs = [r for r in rows if r["arm"] == arm and r.get("run_dir")]
        if not runs:
            continue
        metrics = read_metrics(Path(runs[0]["run_dir"]) / "metrics.jsonl")
        curve = [(m["train/sampled_tokens_total"], m["eval/accuracy"]) for m in metrics if "eval/accuracy" in m]
        if curve:
            axes[0].plot(*zip(*curve), marker="o", label=arm)
    axes[0].set_title(f"validation accuracy while training (seed {runs[0]['seed'] if runs else 0}, 100 problems)")
    axes[0].set_xlabel("sampled tokens")
    arms = [a for a in ORDER if any(r["arm"] == a for r in rows)]
    means = [statistics.fmean(r["accuracy"] for r in rows if r["arm"] == a) for a in arms]
    calls = [statistics.fmean(r["tool_calls_per_problem"] for r in rows if r["arm"] == a) for a in arms]
    axes[1].barh(arms, means, color="tab:blue")
    for y, (m, c) in enumerate(zip(means, calls)):
        axes[1].text(m, y, f" {100 * m:.0f}% ({c:.1f} calls)", va="center", fontsize=8)
    axes[1].set_xlim(0, 1.15)
    axes[1].invert_yaxis()
    axes[1].set_title("held-out greedy accuracy, mean over seeds (calls per problem)", fontsize=10)
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[0].legend()
    save_figure(fig, RESULTS / f"{args.out}.png")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run-dir", default="runs/tools-bench")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--steps", type=int, default=6, help="operations per chain (6: the no-tool SFT base solves ~14%%)")
    p.add_argument("--sft-steps", type=int, default=300)
    p.add_argument("--budget", type=int, default=300_000, help="sampled tokens per GRPO arm")
    p.add_argument("--tune", nargs="+", choices=["no_tools", "tools"], default=[],
                   help="choose GRPO's step size for these arms on validation problems of the train split (first)")
    p.add_argument("--tune-lrs", type=float, nargs="+", default=[1e-5, 2e-5, 5e-5])
    p.add_argument("--tune-problems", type=int, default=200)
    p.add_argument("--turn-tokens", type=int, default=24, help="tokens per model turn (tool arms)")
    p.add_argument("--tool-tokens", type=int, default=160, help="model tokens per conversation (tool arms)")
    p.add_argument("--eval-every", type=int, default=10)
    p.add_argument("--test-problems", type=int, default=500)
    p.add_argument("--out", default="tools", help="the results' file stem under bench/results")
    p.add_argument("--report", action="store_true", help="only write the report from finished seeds")
    p.add_argument("--quick", action="store_true", help="a smoke run: tiny sizes everywhere")
    args = p.parse_args(argv)
    if args.quick:
        args.steps, args.sft_steps, args.budget, args.test_problems, args.seeds, args.eval_every = 3, 20, 3000, 20, [0], 2
        args.tune_lrs, args.tune_problems = [5e-5], 20
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    root = Path(args.run_dir)
    if args.quick:
        args.tune = ["no_tools", "tools"]
    if args.tune:
        for arm in args.tune:
            tune(args, root, arm)
        if not args.quick:
            return 0
    if not args.report:
        for seed in args.seeds:
            run_seed(args, root, seed)
    report(args, root, time.time() - BEGAN)
    log(f"wrote {RESULTS / args.out}.md, .json and .png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
