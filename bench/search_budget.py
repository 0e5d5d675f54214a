"""Search at a budget: greedy, votes, best-of-N, beam, MCTS and eta-MCTS on tiny-model Countdown.

Everything is built here, from scratch, under `--run-dir` (default `runs/search-budget`), one stage after
the other; a stage whose outputs exist is skipped, so an interrupted run resumes (searches resume per
batch of problems, through `run_search_eval`):

1. **SFT** (`sft/`): a fresh built-in tiny model (2.65M parameters) fine-tuned for 600 steps x 64 on
   Countdown demonstrations in the step format (one operation per line, `20-9=11` then `11*2=22`),
   from a pool of 2000 train problems. Difficulty: 3 numbers in 1..20, targets 10..50 (SPECS §7), two
   lines per answer; greedy held-out accuracy 36.5% (300 steps: ~26-31%). 4 numbers were tried first:
   after 300 SFT steps greedy accuracy was 1.5% (numbers 1..20) and 5% (numbers 1..10) -- three
   arithmetic lines in a row, mostly wrong sums -- far below the 20-50% asked for, and far from it
   within this benchmark's time.
2. **Critics** (`critics/`): the SFT policy labels its own samples (4 per problem, temperature 1) and
   Monte-Carlo rollouts (4 per step prefix) on 2048 TRAIN problems that were not in its SFT pool
   (`critics/labels.py`), then a value function (MSE on rollout fractions), an ORM (BCE on verified
   outcomes) and, unless `--no-prm`, a PRM (hard Monte-Carlo step labels) are trained for 2 epochs on
   copies of its trunk (`run_critic_training`, as `selfimprove critic train`).
3. **Searches** (`search/<name>/`), all on the same 200 held-out TEST problems, all with the learned
   critics only (the task verifier judges the chosen answers for the table; no search reads a gold
   answer), all sampling at temperature 1: greedy; majority vote and best-of-N by the ORM at
   n = 4, 16, 64; step-level beam search by the value function and by the PRM at widths 1, 2, 4
   (4 children per state); plain MCTS (UCT, c = 1, 4 children per expansion, value function at the
   leaves, ORM on finished states, answer = the finished node with the best ORM score) and eta-MCTS
   (adaptive branching c_min 2, c_max 6, 12 at the root, alpha 20; merge of identical steps; PUCT over
   the merged sample counts; answer = the most visited finished node; no fast rollouts) at 1, 2, 4, 8
   and 16 simulations. Each is `run_search_eval` on a `SearchRecipe`.
4. **Report**: one table (search, setting, accuracy, mean generated tokens per problem, policy calls,
   critic calls, seconds) printed and written to `bench/results/search_budget.md`, the numbers to
   `bench/results/search_budget.json`, accuracy against tokens to `bench/results/search_budget.png`
   (`--out` names another stem: the reproduce run's second seed writes `search_budget_seed1.*`).

The eta-MCTS settings came from `--tune`, which compares settings on 100 validation TRAIN problems
(past the SFT pool and the critics' problems; never the test problems): UCT or PUCT, answer by ORM
score or by visits, resampling merged slots, one fast rollout, wider trees. On that slice fast
rollouts cost tokens and lost accuracy (42% vs 47%), resampling merged slots cost 60% more tokens for
nothing, and the rest was within noise.

The last line compares eta-MCTS with best-of-64 by the ORM: the tokens per problem eta-MCTS needs to
reach best-of-64's accuracy (linear interpolation in log-tokens between the two eta-MCTS points that
bracket it), over best-of-64's tokens per problem (AlphaLLM: 55 vs 229 rollouts, target <= 1/3):

    mcts_tokens_to_match_bon64=<t> bon64_tokens=<b> ratio=<t/b>

If eta-MCTS's cheapest point is already at or above best-of-64, t is that point's tokens (an upper
bound, and the line before says so); if no point reaches it, t and the ratio are `inf`. The line before
it asks the same against majority vote of 64, the strongest n = 64 baseline here.

    OMP_NUM_THREADS=1 .venv/bin/python bench/search_budget.py      # ~18-25 min on 2 busy cores
    .venv/bin/python bench/search_budget.py --test-problems 50 --run-dir runs/search-budget-small
    .venv/bin/python bench/search_budget.py --tune --until critics  # the validation comparison only
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from transformers.utils import logging as hf_logging  # noqa: E402

from selfimprove.config import SFTRecipe, validate  # noqa: E402
from selfimprove.critics.recipe import CriticRecipe  # noqa: E402
from selfimprove.critics.run import run_critic_training  # noqa: E402
from selfimprove.eval.report import markdown_table  # noqa: E402
from selfimprove.search.recipe import SearchRecipe  # noqa: E402
from selfimprove.search.report import accuracy_plot, read_run  # noqa: E402
from selfimprove.search.run import run_search_eval  # noqa: E402
from selfimprove.methods.sft import run_sft  # noqa: E402
from common import BEGAN, RESULTS, line_bar, log, repo_relative_paths  # noqa: E402  (bench/common.py)

TASK_PARAMS = {"num_numbers": 3, "min_number": 1, "max_number": 20, "min_target": 10, "max_target": 50, "format": "steps"}
SFT_POOL = 2000  # SFT demonstrations: train problems 0..1999 (the critics label problems past them)
STEP = {"kind": "newline", "max_step_tokens": 16}  # one operation per line
MAX_ANSWER_TOKENS = 32  # two lines like `20-9=11` and `11*2=22`, and the end token, fit easily





# ------------------------------------------------------------------------------------- stages
def stage_sft(args: argparse.Namespace, root: Path) -> Path:
    out = root / "sft"
    final = out / "final"
    if (out / "summary.json").is_file() and final.is_dir():
        s = json.loads((out / "summary.json").read_text())
        log(f"SFT: done before ({s['steps']} steps, greedy {s['accuracy']:.1%} on {s['eval_problems']} test problems)")
        return final
    recipe = validate(SFTRecipe, {
        "run_dir": str(out), "seed": args.seed, "model": {"path": "tiny"},
        "task": {"name": "countdown", "params": TASK_PARAMS},
        "steps": args.sft_steps, "batch_size": 64, "num_problems": SFT_POOL,
        "optim": {"lr": 1e-3, "warmup_steps": 50, "schedule": "cosine", "min_lr_ratio": 0.1, "micro_batch_size": 256},
        "schedule": {"eval_every": 0, "checkpoint_every": 100},
        "eval": {"split": "test", "num_problems": args.test_problems, "max_new_tokens": MAX_ANSWER_TOKENS},
    })
    log(f"SFT: {args.sft_steps} steps x 64 demonstrations (pool of {SFT_POOL} train problems), step format")
    with line_bar("sft", args.sft_steps) as on_step:
        s = run_sft(recipe, on_step=on_step)
    log(f"SFT: done in {s['train_seconds']:.0f}s, greedy {s['accuracy']:.1%} on {s['eval_problems']} test problems")
    return final


def stage_critics(args: argparse.Namespace, root: Path, policy: Path) -> Path:
    out = root / "critics"
    kinds = ["value", "orm"] + ([] if args.no_prm else ["prm"])
    if (out / "summary.json").is_file() and all((out / k / "critic.json").is_file() for k in kinds):
        log(f"critics: done before ({', '.join(kinds)} in {out})")
        return out
    recipe = validate(CriticRecipe, {
        "run_dir": str(out), "seed": args.seed, "model": {"path": str(policy)},
        "task": {"name": "countdown", "params": TASK_PARAMS}, "critics": kinds,
        "step_rule": STEP,
        "labels": {"num_problems": args.label_problems, "first_problem": SFT_POOL, "samples_per_problem": 4,
                   "rollouts_per_prefix": 4, "temperature": 1.0, "max_new_tokens": MAX_ANSWER_TOKENS,
                   "problems_per_batch": 128, "max_rollout_rows": 1024, "prm_label": "hard", "rollout_outcomes": True},
        "training": {"epochs": args.critic_epochs, "batch_size": 64, "eval_fraction": 0.1,
                     "optim": {"lr": 5e-4, "micro_batch_size": 64, "warmup_steps": 10, "schedule": "cosine",
                               "min_lr_ratio": 0.1}},
    })
    log(f"critics: {', '.join(kinds)} from the policy's rollouts on train problems "
        f"{SFT_POOL}..{SFT_POOL + args.label_problems - 1}")
    s = run_critic_training(recipe, bar=line_bar)
    for kind, r in s["critics"].items():
        a = r["after"]
        log(f"critics: {kind}: {r['train_examples']} train examples, held out {r['held_out_examples']}: "
            f"AUROC {a.get('auroc', float('nan')):.3f}, Brier {a['brier']:.3f} (base rate {a['positive_rate']:.2f}), "
            f"{r['seconds']:.0f}s")
    return out


def searches(args: argparse.Namespace, critics: Path) -> list[dict[str, Any]]:
    """Every search of the comparison: a label and the recipe fields that differ between them."""
    value, prm, orm = str(critics / "value"), str(critics / "prm"), str(critics / "orm")
    sampled = {"temperature": 1.0, "max_answer_tokens": MAX_ANSWER_TOKENS, "step": STEP}
    sims = {"param": "simulations", "values": args.simulations}
    out: list[dict[str, Any]] = [
        {"label": "greedy", "search": {"name": "greedy", "params": {"max_answer_tokens": MAX_ANSWER_TOKENS, "step": STEP}}},
        {"label": "majority_vote", "search": {"name": "majority_vote", "params": sampled,
                                              "sweep": {"param": "n", "values": [4, 16, 64]}}},
        {"label": "best_of_n-orm", "search": {"name": "best_of_n", "params": sampled,
                                              "sweep": {"param": "n", "values": [4, 16, 64]}},
         "critics": {"orm": orm}},
        {"label": "beam-value", "search": {"name": "beam", "params": {**sampled, "expand": 4, "max_steps": 4},
                                           "sweep": {"param": "beam_width", "values": [1, 2, 4]}},
         "critics": {"value": value}},
    ]
    if not args.no_prm:
        out.append({"label": "beam-prm", "search": {"name": "beam", "params": {**sampled, "expand": 4, "max_steps": 4},
                                                    "sweep": {"param": "beam_width", "values": [1, 2, 4]}},
                    "critics": {"prm": prm}})
    out += [
        {"label": "mcts-plain", "search": {"name": "mcts", "params": plain_params(args, sampled), "sweep": sims},
         "critics": {"value": value, "outcome": orm}},
        {"label": "eta-mcts", "search": {"name": "mcts", "params": eta_params(args, sampled), "sweep": sims},
         "critics": {"value": value, "outcome": orm}},
    ]
    return out


def plain_params(args: argparse.Namespace, sampled: dict[str, Any]) -> dict[str, Any]:
    """Plain MCTS: UCT, a fixed number of children per expansion, leaves valued by the value function,
    finished states by the ORM, the answer = the finished node with the best ORM score (library defaults)."""
    return {**sampled, "max_depth": 4, "selection": "uct", "c": 1.0, "branching": args.branching, "final": "value"}


def eta_params(args: argparse.Namespace, sampled: dict[str, Any]) -> dict[str, Any]:
    """eta-MCTS: adaptive branching, state merge of identical steps, fast rollouts (0 by default: on the
    validation slice they cost tokens and gained nothing), with the selection rule and answer rule
    chosen on the validation slice (PUCT over the merged sample counts, answer = most visited)."""
    return {**sampled, "max_depth": 4, "selection": args.eta_selection, "c": args.c, "final": args.eta_final,
            "adaptive_branching": True, "c_min": args.c_min, "c_max": args.c_max, "c_max_root": args.c_max_root,
            "alpha": args.alpha, "merge": True, "merge_distance": args.merge_distance, "merge_tries": args.merge_tries,
            "fast_rollouts": args.fast_rollouts, "value_weight": 1.0, "rollout_weight": args.rollout_weight}


def stage_search(args: argparse.Namespace, root: Path, policy: Path, spec: dict[str, Any]) -> Path:
    out = root / "search" / spec["label"]
    recipe = validate(SearchRecipe, {
        "run_dir": str(out), "seed": args.seed, "model": {"path": str(policy)},
        "task": {"name": "countdown", "params": TASK_PARAMS},
        "split": "test", "num_problems": args.test_problems, "problems_per_batch": args.problems_per_batch,
        "search": spec["search"], "critics": {**spec.get("critics", {}), "batch_size": 256},
    })
    log(f"search {spec['label']}: {spec['search']['name']}"
        + (f", {spec['search']['sweep']['param']} in {spec['search']['sweep']['values']}" if spec["search"].get("sweep") else ""))
    summary = run_search_eval(recipe, bar=line_bar)
    for p in summary["points"]:
        log(f"  {spec['label']} {setting_text(p['setting'])}: accuracy {p['accuracy']:.1%}, "
            f"{p['mean_tokens']:.0f} tokens/problem, {p['seconds']:.0f}s")
    return out


# ------------------------------------------------------------------------------------- tuning
def stage_tune(args: argparse.Namespace, root: Path, policy_dir: Path, critics: Path) -> None:
    """Compare eta-MCTS settings on a validation slice of TRAIN problems (never the test problems)."""
    from selfimprove.critics.model import load_critic
    from selfimprove.policy.hf import HFPolicy
    from selfimprove.search.mcts import MCTSConfig, mcts_search
    from selfimprove.search.best_of_n import BestOfNConfig, best_of_n_search
    from selfimprove.search.vote import VoteConfig, majority_vote_search
    from selfimprove.tasks.plugins import make_task

    out = root / "tune.jsonl"
    done = {}
    if out.is_file():
        for line in out.read_text().splitlines():
            r = json.loads(line)
            done[r["name"]] = r
    task = make_task("countdown", TASK_PARAMS)
    seen = {task.problem("train", i).prompt for i in range(SFT_POOL + args.label_problems)}
    problems, index = [], 20000
    while len(problems) < args.tune_problems:
        p = task.problem("train", index)
        index += 1
        if p.prompt not in seen:
            seen.add(p.prompt)
            problems.append(p)
    policy = HFPolicy.load(str(policy_dir), seed=args.seed)
    value = load_critic(critics / "value", batch_size=256)
    orm = load_critic(critics / "orm", batch_size=256)
    sampled = {"temperature": 1.0, "max_answer_tokens": MAX_ANSWER_TOKENS, "step": STEP, "seed": args.seed + 1}
    eta = eta_params(args, sampled)
    grid: list[tuple[str, str, dict[str, Any]]] = [
        ("greedy", "bon", {**sampled, "n": 1, "temperature": 0.0}),
        ("best_of_n-orm n=16", "bon", {**sampled, "n": 16}),
        ("best_of_n-orm n=64", "bon", {**sampled, "n": 64}),
        ("majority_vote n=64", "vote", {**sampled, "n": 64}),
        ("plain uct b4 final=value s5", "mcts", {**plain_params(args, sampled), "branching": 4, "simulations": 5}),
        ("plain uct b4 final=visits s5", "mcts", {**plain_params(args, sampled), "branching": 4, "simulations": 5, "final": "visits"}),
    ]
    for sel in ("uct", "puct"):
        for final in ("value", "visits"):
            grid.append((f"eta {sel} final={final} s4", "mcts", {**eta, "selection": sel, "final": final, "simulations": 4}))
    grid += [
        ("eta (defaults) merge_tries=1 s4", "mcts", {**eta, "merge_tries": 1, "simulations": 4}),
        ("eta (defaults) fast_rollouts=1 s4", "mcts", {**eta, "fast_rollouts": 1, "simulations": 4}),
        ("eta (defaults) alpha=50 c_max=8/16 s4", "mcts", {**eta, "alpha": 50.0, "c_max": 8, "c_max_root": 16, "simulations": 4}),
        ("eta (defaults) s16", "mcts", {**eta, "simulations": 16}),
    ]
    log(f"tune: {len(grid)} settings on {len(problems)} validation train problems")
    with out.open("a") as f:
        for name, kind, params in grid:
            if name in done:
                r = done[name]
            else:
                start = time.time()
                if kind == "bon":
                    results = best_of_n_search(policy, task, problems, BestOfNConfig(**params), orm if params["n"] > 1 else None)
                elif kind == "vote":
                    results = majority_vote_search(policy, task, problems, VoteConfig(**params))
                else:
                    results = mcts_search(policy, task, problems, MCTSConfig(**params), value, outcome=orm)
                r = {"name": name, "accuracy": sum(x.correct for x in results) / len(results),
                     "tokens": sum(x.budget.tokens for x in results) / len(results), "seconds": round(time.time() - start, 1)}
                f.write(json.dumps(r) + "\n")
                f.flush()
            log(f"  tune {name:24s} accuracy {r['accuracy']:.1%}  tokens {r['tokens']:.0f}  ({r['seconds']:.0f}s)")


# ------------------------------------------------------------------------------------- report
def setting_text(setting: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in setting.items()) or "-"


def tokens_to_match(points: list[tuple[float, float]], target: float) -> tuple[float, str]:
    """Tokens at which accuracy first reaches `target`, walking the points in token order, linear in
    log-tokens between the last point below and the first point at or above; (inf, why) if none."""
    points = sorted(points)
    for i, (tokens, acc) in enumerate(points):
        if acc >= target:
            if i == 0:
                return tokens, "already at the cheapest point (an upper bound)"
            t0, a0 = points[i - 1]
            frac = (target - a0) / (acc - a0)
            return math.exp(math.log(t0) + frac * (math.log(tokens) - math.log(t0))), \
                f"interpolated between {t0:.0f} tokens ({a0:.1%}) and {tokens:.0f} tokens ({acc:.1%})"
    best = max(points, key=lambda p: p[1]) if points else (float("nan"), float("nan"))
    return math.inf, f"never reached: the best eta-MCTS point is {best[1]:.1%} at {best[0]:.0f} tokens"


def report(args: argparse.Namespace, runs: list[tuple[str, Path]], stamp: dict[str, Any]) -> str:
    rows, data = [], []
    for label, path in runs:
        summary = json.loads((path / "summary.json").read_text())
        for p in summary["points"]:
            rows.append([label, setting_text(p["setting"]), f"{p['accuracy']:.1%}", f"{p['mean_tokens']:.0f}",
                         f"{p['mean_policy_calls']:.1f}", f"{p['mean_critic_calls']:.1f}", f"{p['seconds']:.0f}"])
            data.append({"search": label, "name": summary["search"], "setting": p["setting"], "accuracy": p["accuracy"],
                         "mean_tokens": p["mean_tokens"], "mean_policy_calls": p["mean_policy_calls"],
                         "mean_critic_calls": p["mean_critic_calls"], "seconds": p["seconds"],
                         "problems": p["problems"], "critics": summary["critics"]})
    header = ("search", "setting", "accuracy", "tokens/problem", "policy calls", "critic calls", "seconds")
    table = markdown_table(header, rows)

    bon = next(d for d in data if d["search"] == "best_of_n-orm" and d["setting"] == {"n": 64})
    eta = [(d["mean_tokens"], d["accuracy"]) for d in data if d["search"] == "eta-mcts"]
    t, how = tokens_to_match(eta, bon["accuracy"])
    ratio = t / bon["mean_tokens"]
    final = f"mcts_tokens_to_match_bon64={t:.1f} bon64_tokens={bon['mean_tokens']:.1f} ratio={ratio:.3f}"
    # The same question against the best n = 64 baseline without a critic (majority vote of 64).
    vote = next(d for d in data if d["search"] == "majority_vote" and d["setting"] == {"n": 64})
    vt, vhow = tokens_to_match(eta, vote["accuracy"])
    vote_line = (f"eta-MCTS against majority vote of 64 ({vote['accuracy']:.1%} at {vote['mean_tokens']:.0f} tokens): {vhow}"
                 f" -> ratio {vt / vote['mean_tokens']:.3f}")

    RESULTS.mkdir(parents=True, exist_ok=True)
    plot = accuracy_plot([read_run(path, label) for label, path in runs], RESULTS / f"{args.out}.png")
    (RESULTS / f"{args.out}.json").write_text(json.dumps(repo_relative_paths(
        {**stamp, "points": data, "bon64_accuracy": bon["accuracy"], "bon64_tokens": bon["mean_tokens"],
         "mcts_tokens_to_match_bon64": t if math.isfinite(t) else None, "match": how,
         "ratio": ratio if math.isfinite(ratio) else None, "vote64_accuracy": vote["accuracy"],
         "vote64_tokens": vote["mean_tokens"], "mcts_tokens_to_match_vote64": vt if math.isfinite(vt) else None,
         "vote64_match": vhow}), indent=2))
    (RESULTS / f"{args.out}.md").write_text(
        "# Search at a budget: tiny-model Countdown (step format)\n\n"
        f"{stamp['setup']}\n\n" + table
        + f"\neta-MCTS against best-of-64 by the ORM ({bon['accuracy']:.1%}): {how}.\n\n{vote_line}.\n\n`{final}`\n\n"
        f"![accuracy against tokens]({plot.name})\n")
    print()
    print(table, end="")
    print(f"\neta-MCTS against best-of-64 by the ORM ({bon['accuracy']:.1%} at {bon['mean_tokens']:.0f} tokens): {how}")
    print(vote_line)
    print(f"table: {RESULTS / (args.out + '.md')}, numbers: {RESULTS / (args.out + '.json')}, plot: {plot}")
    return final


# ------------------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run-dir", type=Path, default=Path("runs/search-budget"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="search_budget", help="the results' file stem under bench/results")
    ap.add_argument("--sft-steps", type=int, default=600)
    ap.add_argument("--label-problems", type=int, default=2048, help="train problems the critics' labels come from")
    ap.add_argument("--critic-epochs", type=int, default=2)
    ap.add_argument("--no-prm", action="store_true", help="train no PRM (and run no PRM beam search)")
    ap.add_argument("--test-problems", type=int, default=200, help="held-out test problems every search runs on")
    ap.add_argument("--problems-per-batch", type=int, default=100, help="problems searched in lockstep")
    ap.add_argument("--simulations", type=int, nargs="+", default=[1, 2, 4, 8, 16], help="MCTS sweep (both)")
    ap.add_argument("--branching", type=int, default=4, help="plain MCTS: children per expansion")
    ap.add_argument("--eta-selection", choices=["uct", "puct"], default="puct", help="eta-MCTS selection rule")
    ap.add_argument("--eta-final", choices=["value", "visits"], default="visits", help="eta-MCTS answer rule")
    ap.add_argument("--c", type=float, default=1.0, help="eta-MCTS exploration constant")
    ap.add_argument("--c-min", type=int, default=2)
    ap.add_argument("--c-max", type=int, default=6)
    ap.add_argument("--c-max-root", type=int, default=12)
    ap.add_argument("--alpha", type=float, default=20.0)
    ap.add_argument("--merge-distance", type=int, default=0, help="eta-MCTS: identical steps (0 edits) are one node")
    ap.add_argument("--merge-tries", type=int, default=0, help="eta-MCTS: resampling calls for merged slots")
    ap.add_argument("--fast-rollouts", type=int, default=0)
    ap.add_argument("--rollout-weight", type=float, default=1.0)
    ap.add_argument("--tune", action="store_true", help="first compare eta-MCTS settings on validation train problems")
    ap.add_argument("--tune-problems", type=int, default=100)
    ap.add_argument("--only", nargs="+", default=None, help="run only these searches (labels), then report what exists")
    ap.add_argument("--until", choices=["sft", "critics", "search"], default="search", help="stop after this stage")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    import torch

    root = args.run_dir
    root.mkdir(parents=True, exist_ok=True)
    log(f"search at a budget: Countdown {TASK_PARAMS}, run dir {root}, torch threads {torch.get_num_threads()}")
    policy = stage_sft(args, root)
    if args.until == "sft":
        return 0
    critics = stage_critics(args, root, policy)
    if args.tune:
        stage_tune(args, root, policy, critics)
    if args.until == "critics":
        return 0
    runs = []
    for spec in searches(args, critics):
        if args.only is None or spec["label"] in args.only:
            runs.append((spec["label"], stage_search(args, root, policy, spec)))
        elif (root / "search" / spec["label"] / "summary.json").is_file():
            runs.append((spec["label"], root / "search" / spec["label"]))
    sft = json.loads((root / "sft" / "summary.json").read_text())
    setup = (f"Countdown, step format, {TASK_PARAMS['num_numbers']} numbers in {TASK_PARAMS['min_number']}.."
             f"{TASK_PARAMS['max_number']}, targets {TASK_PARAMS['min_target']}..{TASK_PARAMS['max_target']}; "
             f"policy: built-in tiny model after {sft['steps']} SFT steps (greedy {sft['accuracy']:.1%} at SFT eval); "
             f"{args.test_problems} held-out test problems; critics learned from the policy's rollouts on train "
             f"problems (no gold answer at test time). Means per problem; tokens = every token the policy generated.")
    crit = json.loads((critics / "summary.json").read_text())
    stamp = {"setup": setup, "task": TASK_PARAMS, "sft_steps": sft["steps"], "sft_greedy_accuracy": sft["accuracy"],
             "test_problems": args.test_problems, "sft_seconds": sft["train_seconds"],
             "critic_label_seconds": crit["label_seconds"],
             "critics": {k: {"seconds": r["seconds"], "held_out": r["after"]} for k, r in crit["critics"].items()},
             "invocation_seconds": round(time.time() - BEGAN, 1),  # this run only: stages done before were skipped
             "args": {k: str(v) for k, v in vars(args).items()}}
    final = report(args, runs, stamp)
    log(f"done in {time.time() - BEGAN:.0f}s")
    print(final)
    return 0


if __name__ == "__main__":
    sys.exit(main())
