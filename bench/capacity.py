"""Capacity (issue 26, item 5): does the papers' direction appear as the built-in model grows?

At three sizes of the built-in tiny model (`default` 2.65M, `medium` 10.7M, `large` 25.8M parameters),
for `--seeds` seeds, on validation problems (train problems from index `--val-start`, far past every
problem training draws; the test split is not read):

- the demo's GRPO gain: `selfimprove demo recipes/demo.yaml` (SFT on demonstrations, then GRPO on the
  verifier's reward), greedy accuracy before and after GRPO;
- self-correction: `selfimprove compare recipes/selfcorrect-countdown-steps.yaml` with the arms `base`,
  `pair_sft` and `score` (SCoRe, Stage I + II), Delta(t1, t2) of each, at `--budget` sampled tokens.

Every size runs the same recipes with the same steps and budgets: only the model changes. Each command
resumes itself (`--resume` / compare's own caching), so a stopped run picks up where it was. Run the
stage in two processes: each takes the dearest command that is not done and that no live process holds
(a claim the kernel frees when its process dies), so processes started at different times, or restarted
after a stop, share the work (a size's self-correction runs whole in one process: its seeds share one
base model). Results: `bench/results/capacity.{md,json,png}` (`report`; with `--quick`, under the run folder).

    OMP_NUM_THREADS=1 .venv/bin/python bench/capacity.py run &
    OMP_NUM_THREADS=1 .venv/bin/python bench/capacity.py run
    .venv/bin/python bench/capacity.py report
    .venv/bin/python bench/capacity.py run --quick --run-dir runs/capacity-quick   # a smoke run: minutes
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from common import RESULTS, claim, log, repo_relative_paths, run_logged, set_args, stderr  # noqa: E402  (bench/common.py)

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "selfimprove.cli"]
ARMS = ["base", "pair_sft", "score"]
PARAMS = {"small": "0.09M", "default": "2.65M", "medium": "10.7M", "large": "25.8M"}
# Relative cost of a size (a demo's seconds, from the per-step seconds measured here: SFT 0.65 / 1.58 / 2.88,
# GRPO 0.98 / 1.8 / 4.35 at default / medium / large) and of a command (a self-correction run, its base model
# and two arms over two seeds at 150,000 tokens, took about a demo's time at the default size): the
# dearest command goes first, so that two processes end near the same time.
COST = {"small": 0.05, "default": 1.0, "medium": 2.0, "large": 4.4}
SELFCORRECT_COST = 1.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("stage", choices=["run", "report"])
    ap.add_argument("--run-dir", type=Path, default=Path("runs/capacity"))
    ap.add_argument("--sizes", nargs="+", default=["default", "medium", "large"], choices=sorted(PARAMS))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--only", nargs="+", default=["demo", "selfcorrect"], choices=["demo", "selfcorrect"])
    ap.add_argument("--val-start", type=int, default=1_000_000)
    ap.add_argument("--val-problems", type=int, default=500)
    ap.add_argument("--rl-steps", type=int, default=600, help="the demo's GRPO steps (its recipe's)")
    ap.add_argument("--budget", type=int, default=150_000, help="sampled tokens per self-correction arm (its recipe: 300,000)")
    ap.add_argument("--quick", action="store_true", help="tiny sizes everywhere: a smoke run")
    args = ap.parse_args(argv)
    if args.quick:
        args.sizes, args.seeds, args.val_problems, args.rl_steps, args.budget = ["small"], [0], 20, 4, 1500
    return args


def validation(args: argparse.Namespace, problems: int | None = None) -> dict[str, Any]:
    return {"split": "train", "start": args.val_start, "num_problems": problems or args.val_problems}


def demo_command(args: argparse.Namespace, size: str, seed: int) -> list[str]:
    fields: dict[str, Any] = {"seed": seed, "init.seed": seed, "init.preset": size, "run_dir": args.run_dir / size / "demo" / f"seed{seed}",
                              "rl.steps": args.rl_steps, "sft.schedule.eval_every": 0, "rl.schedule.eval_every": 0,
                              **{f"eval.{k}": v for k, v in validation(args).items()}}
    if args.quick:
        fields.update({"sft.steps": 30})
    return CLI + ["demo", "recipes/demo.yaml", *set_args(fields), "--resume"]


def recipe_arms() -> list[dict[str, Any]]:
    """`ARMS` as the self-correction recipe defines them (its SCoRe: Stage I on half the budget, chosen on
    validation), as arm specs for `--set arms=...`."""
    import yaml

    listed = yaml.safe_load((ROOT / "recipes" / "selfcorrect-countdown-steps.yaml").read_text())["arms"]
    found = {a if isinstance(a, str) else a["name"]: a for a in listed}
    return [found[name] for name in ARMS]


def selfcorrect_command(args: argparse.Namespace, size: str) -> list[str]:
    stage_eval = validation(args, min(args.val_problems, 200))  # each stage's own end-of-run check, on validation too
    fields: dict[str, Any] = {"run_dir": args.run_dir / size / "selfcorrect", "seeds": json.dumps(args.seeds),
                              "arms": json.dumps(recipe_arms()), "base.init.preset": size, "budget_tokens": args.budget,
                              **{f"eval.{k}": v for k, v in validation(args).items()}}
    for section in ("base.sft.eval", "base.warmup.eval", "defaults.score.eval", "defaults.pair_sft.eval"):
        fields.update({f"{section}.{k}": v for k, v in stage_eval.items()})
    if args.quick:
        fields.update({"base.sft.steps": 30, "base.warmup.steps": 8})
    return CLI + ["compare", "recipes/selfcorrect-countdown-steps.yaml", *set_args(fields)]


def commands(args: argparse.Namespace) -> list[tuple[str, list[str], float]]:
    """(name, command, estimated cost) for every run, smallest size first."""
    out = []
    for size in args.sizes:
        if "demo" in args.only:
            out += [(f"{size}-demo-seed{s}", demo_command(args, size, s), COST[size]) for s in args.seeds]
        if "selfcorrect" in args.only:
            out.append((f"{size}-selfcorrect", selfcorrect_command(args, size), SELFCORRECT_COST * COST[size]))
    return out


def queue(args: argparse.Namespace) -> list[tuple[str, list[str], float]]:
    """Every command, the dearest first (the longest-processing-time rule, taken up online by whichever
    process is free), a size's runs in the order listed among equal costs."""
    return sorted(commands(args), key=lambda c: -c[2])


def run(args: argparse.Namespace) -> list[str]:
    """Run every command not done that no other live process holds; returns the names this process ran."""
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), "TOKENIZERS_PARALLELISM": "false"}
    logs = args.run_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    ran = []
    for name, command, _ in queue(args):
        done = logs / f"{name}.DONE"
        with claim(logs / f"{name}.claim") as mine:
            if not mine or done.is_file():  # another process runs it, or it finished
                continue
            log(f"{name}: start (log {logs / (name + '.log')})")
            began = time.time()
            run_logged(command, logs / f"{name}.log", env, ROOT)
            done.write_text(f"{time.time() - began:.0f}\n")
            log(f"{name}: done in {(time.time() - began) / 60:.1f} min")
            ran.append(name)
    return ran


def _mean_se(values: list[float]) -> dict[str, float | int | None]:
    if not values:
        return {"mean": None, "se": None, "seeds": 0}
    se = stderr(values)
    return {"mean": round(statistics.fmean(values), 2), "se": None if math.isnan(se) else round(se, 2), "seeds": len(values)}


def collect(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Per size: the demo's SFT and GRPO accuracy and gain per seed; each self-correction arm's Delta per seed
    (points of validation accuracy); the minutes each command took."""
    rows = []
    for size in args.sizes:
        demos = [json.loads(p.read_text()) for s in args.seeds
                 if (p := args.run_dir / size / "demo" / f"seed{s}" / "summary.json").is_file()]
        summary_path = args.run_dir / size / "selfcorrect" / "summary.json"
        methods = json.loads(summary_path.read_text())["methods"] if summary_path.is_file() else {}
        # a demo's minutes are its SFT + GRPO step clocks, which continue across resumes; a self-correction
        # run's are the wall time of the command that finished it (a resumed run leaves out its earlier part)
        minutes = {f"demo-seed{d['seed']}": round((d["sft_seconds"] + d["rl_seconds"]) / 60, 1) for d in demos}
        if (done := args.run_dir / "logs" / f"{size}-selfcorrect.DONE").is_file():
            minutes["selfcorrect"] = round(float(done.read_text()) / 60, 1)
        row: dict[str, Any] = {"size": size, "parameters": PARAMS[size], "minutes": minutes,
                               "demo": {"per_seed": [{"seed": d["seed"], "sft": 100 * d["sft_accuracy"], "rl": 100 * d["rl_accuracy"]}
                                                     for d in demos]}}
        row["demo"]["gain"] = _mean_se([d["rl"] - d["sft"] for d in row["demo"]["per_seed"]])
        row["demo"]["sft"] = _mean_se([d["sft"] for d in row["demo"]["per_seed"]])
        for arm in ARMS:
            per = methods.get(arm, {}).get("per_seed", [])
            row[arm] = {"delta": _mean_se([100 * r["delta"] for r in per]), "acc_t1": _mean_se([100 * r["acc_t1"] for r in per]),
                        "per_seed": [{"seed": r["seed"], "delta": 100 * r["delta"], "acc_t1": 100 * r["acc_t1"]} for r in per]}
        by_seed = {r["seed"]: r["delta"] for r in row["pair_sft"]["per_seed"]}
        row["score_minus_pair_sft"] = _mean_se([r["delta"] - by_seed[r["seed"]] for r in row["score"]["per_seed"] if r["seed"] in by_seed])
        rows.append(row)
    return rows


def _fmt(stat: dict[str, Any]) -> str:
    if stat["mean"] is None:
        return "—"
    return f"{stat['mean']:+.1f}" + (f" ± {stat['se']:.1f}" if stat["se"] is not None else "")


def results_dir(args: argparse.Namespace) -> Path:
    """bench/results, or with `--quick` the run folder's results/ (a smoke run never replaces committed
    results), unless SELFIMPROVE_BENCH_RESULTS names a folder."""
    return args.run_dir / "results" if args.quick and "SELFIMPROVE_BENCH_RESULTS" not in os.environ else RESULTS


def report(args: argparse.Namespace) -> None:
    from selfimprove.eval.report import markdown_table, save_figure

    rows = collect(args)
    out = results_dir(args)
    setup = {"sizes": args.sizes, "seeds": args.seeds, "validation": validation(args), "rl_steps": args.rl_steps,
             "selfcorrect_budget_tokens": args.budget, "arms": ARMS, "run_dir": args.run_dir}
    out.mkdir(parents=True, exist_ok=True)
    (out / "capacity.json").write_text(json.dumps(repo_relative_paths({"setup": setup, "rows": rows}), indent=2) + "\n")
    table = markdown_table(
        ["model", "parameters", "SFT accuracy %", "GRPO gain (points)", "base Delta", "Pair-SFT Delta", "SCoRe Delta",
         "SCoRe minus Pair-SFT", "minutes"],
        [[r["size"], r["parameters"], _fmt(r["demo"]["sft"]).lstrip("+"), _fmt(r["demo"]["gain"]), _fmt(r["base"]["delta"]),
          _fmt(r["pair_sft"]["delta"]), _fmt(r["score"]["delta"]), _fmt(r["score_minus_pair_sft"]),
          ", ".join(f"{k} {v}" for k, v in r["minutes"].items())] for r in rows])
    lines = ["# Capacity: the papers' direction against model size (bench/capacity.py)", "",
             f"Validation problems: train split from index {args.val_start:,}, {args.val_problems} problems; seeds {args.seeds}; "
             f"demo: recipes/demo.yaml with {args.rl_steps} GRPO steps; self-correction: recipes/selfcorrect-countdown-steps.yaml, "
             f"arms {', '.join(ARMS)}, {args.budget:,} sampled tokens per trained arm. Mean ± standard error over seeds "
             "(points); Delta = accuracy after the second attempt minus the first. Minutes: a demo's SFT + GRPO "
             "training clocks (across resumes, evaluation left out); a self-correction run's wall time in the "
             "command that finished it (all its seeds and arms).", "", table]
    (out / "capacity.md").write_text("\n".join(lines) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    xs = list(range(len(rows)))
    for key, label in (("gain", "GRPO gain"), ("pair_sft", "Pair-SFT Delta"), ("score", "SCoRe Delta")):
        stats = [r["demo"]["gain"] if key == "gain" else r[key]["delta"] for r in rows]
        ax.errorbar(xs, [s["mean"] if s["mean"] is not None else float("nan") for s in stats],
                    yerr=[s["se"] or 0 for s in stats], marker="o", capsize=3, label=label)
    ax.set_xticks(xs, [f"{r['size']} ({r['parameters']})" for r in rows])
    ax.axhline(0, color="grey", lw=0.5)
    ax.set_ylabel("points on validation")
    ax.legend()
    save_figure(fig, out / "capacity.png")
    log(f"wrote {out / 'capacity.md'}, .json, .png")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.stage == "run":
        run(args)
    report(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
