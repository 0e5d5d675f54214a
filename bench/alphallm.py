"""AlphaLLM's loop against sampled-data self-training, on tiny-model Countdown (step format), one table.

Everything is built under `--run-dir` (default `runs/alphallm-loop`); every stage whose outputs exist is
skipped, so an interrupted run resumes (the loop itself resumes per round and per stage):

1. **Base**: a fresh tiny model, SFT on 2,000 Countdown demonstrations in the step format (3 numbers in
   1..20, targets 10..50: the search benchmark's difficulty), which also learns the "write a new
   problem" layout (`sft.imagine`), so the model can imagine. Round 0 of every arm is this model.
2. **Round-0 critics** on the base's own rollouts (value, PRM, ORM; `objective: mixed` = pointwise +
   Bradley-Terry within a problem), with held-out pooled and within-problem AUROC; best-of-N by the ORM
   at n = 4, 16, 64 on the test problems (run with the report, after the arms) shows whether it still
   falls as N grows.
3. **Arms**, each for every seed, `--rounds` rounds, the same seed prompts (train problems 2000..),
   the same token budget per round (imagination and data), the same SFT settings:
   - `mcts`: imagination by the policy, eta-MCTS data, the critic filter (AlphaLLM);
   - `rft`: the same imagination, sampled data (up to 64 answers per prompt within the same tokens,
     the best ORM-scored one kept): ReST-EM / RFT;
   - `mcts-no-imagination`: seeds only;
   - `grpo`: GRPO from the base with the same sampled tokens per round, for reference;
   - `mcts-then-grpo`: round 1 of `mcts`, then GRPO from its model, the same sampled tokens in all as
     `grpo` (does search-data SFT before GRPO beat GRPO alone?).
   Default arms: `mcts`, `rft`, `grpo`, `mcts-then-grpo` (issue 26: 3 rounds, 3 seeds, the loop's critics
   value + PRM + ORM, `--critics`).
   Every round of every arm is evaluated on the same 500 held-out test problems: greedy, and eta-MCTS
   with that round's critics (round-0 critics for GRPO).
4. **eta-MCTS ablation** (the paper's Table 3a) on the base with the round-0 critics, at one token budget
   per problem: vanilla MCTS -> +adaptive branching -> +PRM -> +fast rollouts -> +state merge, each with
   and without the gold-free tool critic.
5. **Report**: `bench/results/alphallm.md` (tables), `alphallm.json` (rows: arm, round, seed, greedy,
   search, kept, kept_precision, imagined, tokens; the ablation; the critics; the setup) and `alphallm.png` (accuracy
   per round).

    OMP_NUM_THREADS=1 .venv/bin/python bench/alphallm.py --run-dir runs/alphallm-loop   # hours on 2 cores
    # two processes side by side (each its arms only), then one that writes the report from what ran:
    OMP_NUM_THREADS=1 .venv/bin/python bench/alphallm.py --run-dir runs/alphallm-loop --arms mcts mcts-then-grpo --arms-only &
    OMP_NUM_THREADS=1 .venv/bin/python bench/alphallm.py --run-dir runs/alphallm-loop --arms rft grpo --arms-only   # once the first logs an arm
    .venv/bin/python bench/alphallm.py --quick --run-dir runs/alphallm-quick   # minutes: a smoke run
    OMP_NUM_THREADS=1 .venv/bin/python bench/alphallm.py --task chain --arms mcts mcts-tool --seeds-list 0 \
        --rounds 2 --critics value orm --run-dir runs/alphallm-chain   # the task where the tool critic is only partial
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

from selfimprove.config import RLRecipe, SFTRecipe, validate  # noqa: E402
from selfimprove.eval.report import markdown_table, save_figure  # noqa: E402
from selfimprove.methods.alphallm import AlphaLLMRecipe, Loop, run_alphallm  # noqa: E402
from selfimprove.methods.rl import RL  # noqa: E402
from selfimprove.methods.sft import SFT  # noqa: E402
from selfimprove.policy.tiny import write_tiny_model  # noqa: E402
from selfimprove.search.recipe import SearchRecipe  # noqa: E402
from selfimprove.search.run import run_search_eval  # noqa: E402
from common import BEGAN, RESULTS, keep_span, line_bar, log, repo_relative_paths, stderr, union_minutes  # noqa: E402  (bench/common.py)

# The main bench, and a task where the tool critic is only partial (a calculator: right arithmetic on
# the wrong operations passes it).
TASKS = {
    "countdown": ({"name": "countdown", "params": {"num_numbers": 3, "min_number": 1, "max_number": 20, "min_target": 10,
                                                   "max_target": 50, "format": "steps"}}, 32),
    "chain": ({"name": "chain", "params": {"num_steps": 5, "min_number": 1, "max_number": 9, "ops": "+-*"}}, 48),
}
TASK, MAX_ANSWER = TASKS["countdown"]
STEP = {"kind": "newline", "max_step_tokens": 16}
SFT_POOL = 2000


def eta_search(args: argparse.Namespace) -> dict[str, Any]:
    """The eta-MCTS of the loop (data and test time): the search benchmark's tuned settings."""
    return {"simulations": args.simulations, "max_answer_tokens": MAX_ANSWER, "step": STEP, "max_depth": 4,
            "temperature": 1.0, "selection": "puct", "c": 1.0, "final": "visits", "adaptive_branching": True,
            "c_min": 2, "c_max": 6, "c_max_root": 12, "alpha": 20.0, "merge": True, "merge_distance": 0,
            "merge_tries": 0, "fast_rollouts": 0}


def critics_section(args: argparse.Namespace, kinds: list[str], problems: int) -> dict[str, Any]:
    return {"critics": kinds, "step_rule": STEP,
            "labels": {"num_problems": problems, "samples_per_problem": 4, "rollouts_per_prefix": 4, "temperature": 1.0,
                       "max_new_tokens": MAX_ANSWER, "problems_per_batch": 128, "max_rollout_rows": 1024},
            "training": {"epochs": args.critic_epochs, "batch_size": 64, "eval_fraction": 0.1, "objective": "mixed",
                         "optim": {"lr": 5e-4, "micro_batch_size": 64, "warmup_steps": 10, "schedule": "cosine",
                                   "min_lr_ratio": 0.1}}}


def stage_base(args: argparse.Namespace, root: Path, preset: str = "default") -> str:
    """The shared SFT base under `root` (the built-in model at `preset`, `args.sft_steps` steps); its path."""
    out = root / "base"
    if not (out / "summary.json").is_file():
        if not (root / "init" / "config.json").is_file():
            write_tiny_model(root / "init", preset, 0)
        recipe = validate(SFTRecipe, {
            "run_dir": str(out), "seed": 0, "model": {"path": str(root / "init")}, "task": TASK, "steps": args.sft_steps,
            "batch_size": 64, "num_problems": SFT_POOL, "imagine": {"fraction": 0.25, "seeds_in_prompt": 2},
            "optim": {"lr": 1e-3, "warmup_steps": 50, "schedule": "cosine", "min_lr_ratio": 0.1, "micro_batch_size": 256},
            "schedule": {"eval_every": 0, "checkpoint_every": 100},
            "eval": {"split": "test", "num_problems": 200, "max_new_tokens": MAX_ANSWER}})
        log(f"base ({preset}): SFT {args.sft_steps} steps x 64 (pool {SFT_POOL}, step format, with the imagination layout)")
        with line_bar("sft", args.sft_steps) as on_step:
            SFT(recipe).run(on_step)
    s = json.loads((out / "summary.json").read_text())
    log(f"base: greedy {s['accuracy']:.1%} on {s['eval_problems']} test problems")
    return str(out / "final")


def round_critics(round_dir: Path) -> dict[str, float] | None:
    """The within-problem AUROC of each critic a round retrained, on its own held-out split (None: none retrained)."""
    path = round_dir / "critics" / "summary.json"
    if not path.is_file():
        return None
    found = json.loads(path.read_text()).get("critics", {})
    return {k: round(v["after"]["within_auroc"], 3) for k, v in found.items() if "within_auroc" in v.get("after", {})}


def loop_recipe(args: argparse.Namespace, root: Path, base: str, arm: str, seed: int) -> AlphaLLMRecipe:
    data = {"source": "samples" if arm == "rft" else "mcts", "gamma": args.gamma, "samples": 64, "problems_per_batch": 128}
    tool = arm == "mcts-tool"
    return validate(AlphaLLMRecipe, {
        "run_dir": str(root / "arms" / arm / f"seed{seed}"), "seed": seed, "model": {"path": base}, "task": TASK,
        "rounds": args.rounds, "seeds": args.seeds, "first_problem": SFT_POOL,
        "imagine": {"kind": "none" if arm == "mcts-no-imagination" else args.imagine, "per_round": args.imagined,
                    "max_new_tokens": 24},
        "budget_tokens": args.budget, "data": data, "search": eta_search(args), "tool": tool,
        "critics": critics_section(args, args.critics, args.label_problems),
        "sft": {"batch_size": 32, "optim": {"lr": args.sft_lr, "warmup_steps": 5, "micro_batch_size": 128}},
        "sft_epochs": args.sft_epochs,
        "eval": {"num_problems": args.test_problems, "max_new_tokens": MAX_ANSWER, "problems_per_batch": 100},
    })


def shared_round0(args: argparse.Namespace, root: Path, base: str) -> Path:
    """Round 0 (the base, its critics, its evaluation) once for every arm and seed: the arms link to it."""
    recipe = loop_recipe(args, root, base, "mcts", 0)
    shared = root / "round0"
    recipe = recipe.model_copy(update={"run_dir": str(root / "shared"), "critics": critics_section(args, ["value", "prm", "orm"], args.label_problems)})
    loop = Loop(recipe, line_bar)
    log("round 0: critics (value, PRM, ORM) on the base's own rollouts")
    summary = loop.critics(shared / "critics", base, 0)
    for kind, r in summary["critics"].items():
        a = r["after"]
        log(f"  {kind}: AUROC {a['auroc']:.3f}, within-problem AUROC {a.get('within_auroc', float('nan')):.3f}, "
            f"Brier {a['brier']:.3f} on {r['held_out_examples']} held-out examples")
    row = loop.evaluate(shared, base, shared / "critics")
    log(f"round 0: greedy {row['greedy']:.1%}, eta-MCTS {row.get('search', float('nan')):.1%} on {row['problems']} test problems")
    return shared


def link_round0(shared: Path, run_dir: Path) -> None:
    """An arm's round 0 is the shared one (same base, same critics, same evaluation)."""
    target = run_dir / "round0"
    if not target.exists():
        run_dir.mkdir(parents=True, exist_ok=True)
        target.symlink_to(shared.resolve(), target_is_directory=True)


def stage_grpo(args: argparse.Namespace, root: Path, base: str, seed: int, shared: Path, *, arm: str = "grpo",
               first_round: int = 1, extra_tokens: int = 0) -> list[dict[str, Any]]:
    """GRPO from `base`, `budget` sampled tokens per round (the first of them `extra_tokens` more),
    rounds `first_round`..`rounds`, evaluated like the loop's rounds."""
    rows = []
    model = base
    loop = Loop(loop_recipe(args, root, base, "mcts", seed), line_bar)
    for r in range(first_round, args.rounds + 1):
        out = root / "arms" / arm / f"seed{seed}" / f"round{r}"
        budget = args.budget + (extra_tokens if r == first_round else 0)
        recipe = validate(RLRecipe, {
            "run_dir": str(out / "rl"), "seed": seed, "model": {"path": model}, "task": TASK, "steps": 10_000,
            "prompts_per_step": 16, "first_problem": SFT_POOL, "max_sampled_tokens": budget,
            "sampling": {"n": 8, "temperature": 1.0, "max_new_tokens": MAX_ANSWER},
            "optim": {"lr": 5e-5, "warmup_steps": 5, "micro_batch_size": 128},
            "schedule": {"eval_every": 0, "checkpoint_every": 25}, "eval": {"num_problems": 50, "max_new_tokens": MAX_ANSWER}})
        if not (out / "rl" / "summary.json").is_file():
            log(f"{arm} seed {seed} round {r}: {budget:,} sampled tokens")
            with line_bar("grpo", None) as on_step:
                RL(recipe).run(on_step)
        spent = json.loads((out / "rl" / "summary.json").read_text())["sampled_tokens"]
        model = str(out / "rl" / "final")
        row = loop.evaluate(out, model, shared / "critics")
        rows.append({"arm": arm, "round": r, "seed": seed, **row, "kept": 0, "imagined": 0, "tokens": spent})
    return rows


def stage_search_then_grpo(args: argparse.Namespace, root: Path, base: str, seed: int, shared: Path) -> list[dict[str, Any]]:
    """Search data to seed the policy, then GRPO: round 1 is the `mcts` arm's round 1 (eta-MCTS data, SFT),
    rounds 2.. are GRPO from its model; round 2 also gets what round 1 left of its budget, so the arm
    samples as many tokens in all as GRPO alone (`rounds` x `budget`)."""
    recipe = loop_recipe(args, root, base, "mcts", seed)
    if not (Path(recipe.run_dir) / "summary.json").is_file():
        link_round0(shared, Path(recipe.run_dir))
        run_alphallm(recipe, line_bar)
    first = next(r for r in json.loads((Path(recipe.run_dir) / "summary.json").read_text())["rounds"] if r["round"] == 1)
    rows = [{"arm": "mcts-then-grpo", "seed": seed, **{k: first.get(k) for k in ("round", "greedy", "search", "kept", "kept_precision",
                                                                               "imagined", "tokens")}}]
    round1 = Path(recipe.run_dir) / "round1"
    model = str(round1 / "dpo" / "final") if (round1 / "dpo" / "final").is_dir() else str(round1 / "sft" / "final")
    return rows + stage_grpo(args, root, model, seed, shared, arm="mcts-then-grpo", first_round=2,
                             extra_tokens=max(0, args.budget - int(first["tokens"])))


def ablation(args: argparse.Namespace, root: Path, base: str, shared: Path) -> list[dict[str, Any]]:
    """The paper's Table 3a at one budget per problem, each with and without the tool critic."""
    critics = shared / "critics"
    base_params = {"simulations": args.simulations, "max_answer_tokens": MAX_ANSWER, "step": STEP, "max_depth": 4,
                   "temperature": 1.0, "selection": "uct", "c": 1.0, "final": "value", "branching": 4}
    steps = [
        ("vanilla MCTS", {}, False),
        ("+adaptive branching", {"adaptive_branching": True, "c_min": 2, "c_max": 6, "c_max_root": 12, "alpha": 20.0}, False),
        ("+PRM", {}, True),
        ("+fast rollouts", {"fast_rollouts": 1, "rollout_weight": 1.0}, True),
        ("+state merge", {"merge": True, "merge_distance": 0, "merge_tries": 0}, True),
    ]
    rows, params, prm = [], dict(base_params), False
    for label, extra, with_prm in steps:
        params.update(extra)
        prm = prm or with_prm
        for tool in (False, True):
            name = f"{label}{' +tool' if tool else ''}"
            out = root / "ablation" / name.replace(" ", "_").replace("+", "plus_")
            members = {"value": str(critics / "value"), **({"prm": str(critics / "prm")} if prm else {}), "tool": tool,
                       "outcome": str(critics / "orm"), "outcome_tool": tool, "batch_size": 256}
            recipe = validate(SearchRecipe, {
                "run_dir": str(out), "seed": 0, "model": {"path": base}, "task": TASK, "split": "test",
                "num_problems": args.test_problems, "problems_per_batch": 100, "max_tokens": args.ablation_tokens,
                "search": {"name": "mcts", "params": dict(params)}, "critics": members})
            s = run_search_eval(recipe, bar=line_bar)
            log(f"ablation {name}: {s['accuracy']:.1%} at {s['mean_tokens']:.0f} tokens/problem")
            rows.append({"setting": name, "tool": tool, "accuracy": s["accuracy"], "tokens": s["mean_tokens"],
                         "critic_calls": s["mean_critic_calls"], "problems": s["problems"]})
    return rows


def best_of_n(args: argparse.Namespace, root: Path, base: str, shared: Path) -> list[dict[str, Any]]:
    """Best-of-N by the round-0 ORM at n = 4, 16, 64 on the test problems: does it still fall with N?"""
    recipe = validate(SearchRecipe, {
        "run_dir": str(root / "best_of_n"), "seed": 0, "model": {"path": base}, "task": TASK, "split": "test",
        "num_problems": args.bon_problems, "problems_per_batch": 50,
        "search": {"name": "best_of_n", "params": {"temperature": 1.0, "max_answer_tokens": MAX_ANSWER, "step": STEP},
                   "sweep": {"param": "n", "values": [1, 4, 16, 64]}},
        "critics": {"orm": str(shared / "critics" / "orm"), "batch_size": 256}})
    s = run_search_eval(recipe, bar=line_bar)
    rows = [{"n": p["setting"]["n"], "accuracy": p["accuracy"], "tokens": p["mean_tokens"]} for p in s["points"]]
    log("best-of-N by the ORM: " + ", ".join(f"n={r['n']} {r['accuracy']:.1%}" for r in rows))
    return rows


def _precision(rows: list[dict[str, Any]]) -> str:
    """The share of kept paths the verifier calls right (kept paths weighted), "-" when none were kept."""
    kept = [(r["kept"], r["kept_precision"]) for r in rows if r.get("kept_precision") is not None and r["kept"]]
    total = sum(k for k, _ in kept)
    return f"{100 * sum(k * p for k, p in kept) / total:.0f}" if total else "-"


def report(args: argparse.Namespace, rows: list[dict[str, Any]], abl: list[dict[str, Any]], bon: list[dict[str, Any]],
           critics: dict[str, Any], seconds: float) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    arms = list(dict.fromkeys(r["arm"] for r in rows))
    table = []
    for arm in arms:
        for rnd in range(0, args.rounds + 1):
            mine = [r for r in rows if r["arm"] == arm and r["round"] == rnd]
            if not mine:
                continue
            g = [r["greedy"] for r in mine]
            s = [r["search"] for r in mine if r.get("search") is not None]
            table.append([arm, rnd, len(mine), f"{100 * statistics.fmean(g):.1f} ± {100 * stderr(g):.1f}" if len(g) > 1 else f"{100 * g[0]:.1f}",
                          (f"{100 * statistics.fmean(s):.1f} ± {100 * stderr(s):.1f}" if len(s) > 1 else f"{100 * s[0]:.1f}") if s else "-",
                          f"{statistics.fmean(r['kept'] for r in mine):.0f}", _precision(mine),
                          f"{statistics.fmean(r['imagined'] for r in mine):.0f}",
                          f"{statistics.fmean(r['tokens'] for r in mine):,.0f}"])
    md = [f"# AlphaLLM's loop against sampled-data self-training (tiny model, {args.task})\n",
          f"Command: `OMP_NUM_THREADS=1 .venv/bin/python bench/alphallm.py {' '.join(repo_relative_paths(sys.argv[1:]))}` ({seconds / 60:.0f} min of wall time over its invocations, "
          f"2-core machine). Seeds {args.seeds_list}; {args.rounds} rounds; {args.seeds} seed prompts; "
          f"{args.budget:,} policy tokens per round; {args.test_problems} held-out test problems (greedy and "
          f"eta-MCTS with that round's learned critics ({' + '.join(args.critics)}), no gold answers). Mean ± standard error over seeds; "
          "round 0 is the shared SFT base.\n",
          markdown_table(["arm", "round", "seeds", "greedy %", "eta-MCTS %", "paths kept", "kept right %", "imagined", "tokens"], table),
          "\n## eta-MCTS ablation (round-0 policy and critics)\n",
          f"Per-problem token budget {args.ablation_tokens}; {args.simulations} simulations; the tool critic joins the value "
          "and the outcome critic (gold-free: the prompt and the text only).\n",
          markdown_table(["setting", "accuracy %", "tokens/problem", "critic calls"],
                         [[r["setting"], f"{100 * r['accuracy']:.1f}", f"{r['tokens']:.0f}", f"{r['critic_calls']:.1f}"] for r in abl]),
          "\n## Round-0 critics (held out) and best-of-N by the ORM\n",
          markdown_table(["critic", "AUROC", "within-problem AUROC", "Brier", "examples"],
                         [[k, f"{v['after']['auroc']:.3f}", f"{v['after'].get('within_auroc', float('nan')):.3f}",
                           f"{v['after']['brier']:.3f}", v["held_out_examples"]] for k, v in critics.items()]),
          "\n" + markdown_table(["n", "accuracy %", "tokens/problem"], [[r["n"], f"{100 * r['accuracy']:.1f}", f"{r['tokens']:.0f}"] for r in bon])]
    name = "alphallm" if args.task == "countdown" else f"alphallm_{args.task}"
    (RESULTS / f"{name}.md").write_text("\n".join(md))
    setup = {"task": TASK, "seeds": args.seeds_list, "rounds": args.rounds, "seed_prompts": args.seeds,
             "imagined_per_round": args.imagined, "imagine": args.imagine, "budget_tokens_per_round": args.budget,
             "gamma": args.gamma, "sft_steps": args.sft_steps, "simulations": args.simulations,
             "test_problems": args.test_problems, "wall_seconds": round(seconds), "search": eta_search(args),
             "loop_critics": args.critics, "label_problems": args.label_problems, "arms": args.arms}
    (RESULTS / f"{name}.json").write_text(json.dumps(repo_relative_paths({"rows": [
        {k: r.get(k) for k in ("arm", "round", "seed", "greedy", "search", "kept", "kept_precision", "imagined", "tokens",
                               "critics_within_auroc")} for r in rows],
        "ablation": abl, "best_of_n": bon, "critics": critics, "setup": setup}), indent=2))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, key, title in ((axes[0], "greedy", "greedy"), (axes[1], "search", "eta-MCTS at test time")):
        for arm in arms:
            xs = sorted({r["round"] for r in rows if r["arm"] == arm})
            ys = [statistics.fmean(r[key] for r in rows if r["arm"] == arm and r["round"] == x and r.get(key) is not None) for x in xs]
            ax.plot(xs, ys, marker="o", label=arm)
        ax.set_title(title)
        ax.set_xlabel("round")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("held-out accuracy (mean over seeds)")
    axes[1].legend(fontsize=8)
    save_figure(fig, RESULTS / f"{name}.png")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run-dir", default="runs/alphallm-loop")  # runs/alphallm-bench: the first runs (2 rounds, value + ORM)
    p.add_argument("--seeds-list", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--task", choices=sorted(TASKS), default="countdown")
    p.add_argument("--arms", nargs="+", default=["mcts", "rft", "grpo", "mcts-then-grpo"],
                   choices=["mcts", "mcts-tool", "rft", "mcts-no-imagination", "grpo", "mcts-then-grpo"])
    p.add_argument("--imagine", choices=["policy", "rewrite"], default="policy")
    p.add_argument("--sft-steps", type=int, default=600)
    p.add_argument("--seeds", type=int, default=256)
    p.add_argument("--imagined", type=int, default=128)
    p.add_argument("--budget", type=int, default=60_000)
    # Above the ORM's base rate (its held-out positive rate on train problems is ~0.2-0.25). At 0.5 the
    # round-1 ORM of the first run scored no path above it, so round 2 kept nothing (0 of 330 prompts).
    p.add_argument("--gamma", type=float, default=0.3)
    p.add_argument("--simulations", type=int, default=16)
    p.add_argument("--label-problems", type=int, default=512)
    p.add_argument("--critic-epochs", type=int, default=2)
    p.add_argument("--sft-lr", type=float, default=1e-4)
    p.add_argument("--sft-epochs", type=float, default=2.0)
    p.add_argument("--test-problems", type=int, default=500)
    p.add_argument("--ablation-tokens", type=int, default=128)
    p.add_argument("--bon-problems", type=int, default=200)
    # the paper scores a state with value + PRM + ORM (SPECS §5); the first runs (2026-11) trained value + ORM
    p.add_argument("--critics", nargs="+", default=["value", "prm", "orm"], choices=["value", "prm", "orm"])
    p.add_argument("--arms-only", action="store_true",
                   help="run the arms only, no ablation or report: for processes side by side (a last run without it reports)")
    p.add_argument("--quick", action="store_true", help="a smoke run: tiny sizes everywhere")
    args = p.parse_args(argv)
    if "value" not in args.critics:
        p.error("--critics must include value: eta-MCTS scores unfinished states with it (and finished ones without an ORM)")
    if args.quick:
        args.sft_steps, args.seeds, args.imagined, args.budget = 60, 16, 8, 3000
        args.label_problems, args.critic_epochs, args.test_problems, args.bon_problems = 32, 1, 20, 10
        args.simulations, args.seeds_list, args.rounds = 4, [0], 1
    global TASK, MAX_ANSWER
    TASK, MAX_ANSWER = TASKS[args.task]
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    root = Path(args.run_dir)
    root.mkdir(parents=True, exist_ok=True)
    base = stage_base(args, root)
    shared = shared_round0(args, root, base)
    critics = json.loads((shared / "critics" / "summary.json").read_text())["critics"]
    spans = root / "spans"  # every invocation's (start, end), side-by-side ones included: the report's wall time
    spans.mkdir(exist_ok=True)
    span = spans / f"{BEGAN:.0f}-{os.getpid()}"
    keep_span(span)
    rows: list[dict[str, Any]] = []
    round0 = json.loads((shared / "eval.json").read_text())
    for arm in args.arms:
        for seed in args.seeds_list:
            rows.append({"arm": arm, "round": 0, "seed": seed, **round0, "kept": 0, "imagined": 0, "tokens": 0})
            if arm == "grpo":
                rows += stage_grpo(args, root, base, seed, shared)
                continue
            if arm == "mcts-then-grpo":
                rows += stage_search_then_grpo(args, root, base, seed, shared)
                continue
            recipe = loop_recipe(args, root, base, arm, seed)
            link_round0(shared, Path(recipe.run_dir))
            log(f"{arm} seed {seed}: {args.rounds} rounds")
            s = run_alphallm(recipe, line_bar)
            for row in s["rounds"][1:]:
                rows.append({"arm": arm, "seed": seed, **{k: row.get(k) for k in ("round", "greedy", "search", "kept", "kept_precision",
                                                                                   "imagined", "tokens")},
                             "critics_within_auroc": round_critics(Path(recipe.run_dir) / f"round{row['round']}")})
                log(f"  {arm} seed {seed} round {row['round']}: greedy {row['greedy']:.1%}, eta-MCTS {row.get('search', 0):.1%}, "
                    f"kept {row['kept']}, imagined {row['imagined']} ({row.get('imagine', {})}), {row['tokens']:,} tokens")
    if args.arms_only:
        log(f"arms {args.arms} done; run without --arms-only to write the report")
        return 0
    bon = best_of_n(args, root, base, shared)  # after the arms: processes side by side never run it together
    abl = ablation(args, root, base, shared)
    span.write_text(f"{BEGAN:.0f} {time.time():.0f}\n")
    report(args, rows, abl, bon, critics, 60 * union_minutes(spans))
    log(f"wrote the table, JSON and PNG under {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
