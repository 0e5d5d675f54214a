"""Choose self-correction's and RRR's settings on a validation split of *train* problems (never the test split).

The reproduce run's self-correction comparison (recipes/selfcorrect-countdown-steps.yaml) and its RRR
runs (recipes/rrr-countdown.yaml in the step format) take their learning rate, SCoRe's alpha, Stage I's
share, the budget and RRR's anti-forgetting options from here. Every candidate trains from the same base
as the comparison (the recipe's own: tiny model -> SFT -> format warm-up, seed 0) and is judged on
`--val-problems` train problems from index `--val-start` on (far past every problem training draws; a
generated task may repeat a prompt training saw, like any i.i.d. draw).

- `score`: SCoRe (Stage I + II) candidates, one `selfimprove compare` arm each: lr, alpha, Stage I's
  share; the chosen one by validation Acc@t2 (the accuracy after self-correction, SCoRe's objective).
- `budget`: the chosen SCoRe candidate at `--long-budget` tokens (up to the issue's ~1M), with the same
  arms as the comparison's baselines (Pair-SFT) for scale.
- `rrr-seeds`: each task's chosen RRR setting again with seeds `--check-seeds` (after the choice, which it
  cannot change): whether its validation gain is more than one seed's noise.
- `rrr-countdown`, `rrr-function-calling`: Reflect-Retry-Reward as in the paper and with each
  anti-forgetting option (a lower lr, a KL to the start model on every generated token, GRPO on first
  attempts); chosen: the best after-retry accuracy among candidates whose first attempt stays within 1
  point of before. Function calling starts from its own base (SFT, then the format warm-up).

Runs resume (each is an ordinary run folder); two jobs at a time with one torch thread each. Writes
`bench/results/selfcorrect_tune.{md,json}`.

    OMP_NUM_THREADS=1 .venv/bin/python bench/selfcorrect_tune.py            # every study
    OMP_NUM_THREADS=1 .venv/bin/python bench/selfcorrect_tune.py --only rrr-countdown
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import yaml

from common import RESULTS, log, repo_relative_paths, run_logged, set_args, stderr  # noqa: E402  (bench/common.py)

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "selfimprove.cli"]
RECIPE = ROOT / "recipes" / "selfcorrect-countdown-steps.yaml"
RRR_RECIPE = ROOT / "recipes" / "rrr-countdown.yaml"

# SCoRe (Stage I + II): (name, lr, alpha, Stage I share). The recipe's values first.
# (lr 2e-4 collapses the diversity of the tiny model's groups in GRPO; 1e-4 is not tried for that reason.)
SCORE = (("lr5e-5", 5e-5, 10.0, 0.3), ("lr2e-5", 2e-5, 10.0, 0.3), ("alpha3", 5e-5, 3.0, 0.3), ("stage1-0.5", 5e-5, 10.0, 0.5))
# RRR: name -> recipe fields over recipes/rrr-countdown.yaml (the paper's RRR first).
RRR: dict[str, dict[str, Any]] = {
    "rrr": {},
    "lr1e-5": {"optim.lr": 1e-5},
    "kl-generated": {"loss.kl_coef": 0.05, "loss.kl_scope": "generated"},
    "first-attempts": {"rrr.failure_samples": 4, "rrr.first_attempt_weight": 0.5},
    "anchored": {"loss.kl_coef": 0.05, "loss.kl_scope": "generated", "rrr.failure_samples": 4, "rrr.first_attempt_weight": 0.5},
    # added after function calling's lr 1e-5 alone still lost 1.5 points of first attempts: both cures at once
    "lr1e-5-first-attempts": {"optim.lr": 1e-5, "rrr.failure_samples": 4, "rrr.first_attempt_weight": 0.5},
}
RRR_TASKS = {"countdown": "Countdown, step format", "function-calling": "function calling"}
# Function calling skips `anchored` (the paper's lr with both cures): there the KL alone did not stop the
# paper's lr from forgetting (39.3 -> 15.8 without, -> see the table with), and time went to
# `lr1e-5-first-attempts` instead.
RRR_SKIP: dict[str, set[str]] = {"countdown": set(), "function-calling": {"anchored"}}
STEPS_FORMAT = {"task.params.format": "steps", "sampling.max_new_tokens": 32, "eval.max_new_tokens": 32}


def score_arm(name: str, lr: float, alpha: float, share: float) -> dict[str, Any]:
    fields = {"optim": {"lr": lr}}
    return {"name": f"score-{name}", "label": f"SCoRe {name}", "stages": [
        {"method": "score", "name": f"{name}-stage1", "budget": share, "set": {**fields, "score": {"stage": "I", "alpha": alpha}}},
        {"method": "score", "name": f"{name}-stage2", "set": {**fields, "score": {"stage": "II", "alpha": alpha}}}]}


def compare_recipe(root: Path, arms: list[Any], args: argparse.Namespace, budget: int | None = None) -> dict[str, Any]:
    recipe = yaml.safe_load(RECIPE.read_text())
    validation = {"split": "train", "start": args.val_start}
    recipe.update(run_dir=str(root), seeds=[0], arms=arms, eval={**recipe["eval"], **validation, "num_problems": args.val_problems})
    # every run's own end-of-run evaluation reads validation problems too: tuning never reads the test split
    for section in [recipe["base"]["sft"], recipe["base"]["warmup"], *recipe["defaults"].values()]:
        section["eval"] = {**section.get("eval", {}), **validation}
    if budget is not None:
        recipe["budget_tokens"] = budget
    if args.quick:
        recipe["base"]["sft"]["steps"], recipe["base"]["warmup"]["steps"] = 20, 5
        recipe["budget_tokens"] = min(budget or 1500, 1500)
        for section in ("sft", "warmup"):
            recipe["base"][section]["eval"]["num_problems"] = 10
        for method in ("score", "star", "pair_sft"):
            recipe["defaults"][method]["eval"]["num_problems"] = 10
    return recipe


def run(command: list[Any], log_file: Path) -> None:
    run_logged(command, log_file, {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}, ROOT)


def compare(root: Path, recipe: dict[str, Any], part: str) -> Path:
    path = root / "recipes" / f"{part}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    run(CLI + ["compare", str(path)], root / f"{part}.log")
    return root / "summary.json"


def parallel(jobs: list[tuple[Any, ...]], fn: Any, workers: int) -> None:
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for future in [pool.submit(fn, *job) for job in jobs]:
            future.result()


def tune_score(args: argparse.Namespace) -> dict[str, Any]:
    root = args.run_dir / "score"
    arms = ["base", "pair_sft"] + [score_arm(*c) for c in SCORE]
    halves = [arms[i::args.jobs] for i in range(args.jobs)]
    parallel([(root, compare_recipe(root, half, args), f"part{i}") for i, half in enumerate(halves)], compare, args.jobs)
    return json.loads(compare(root, compare_recipe(root, arms, args), "all").read_text())  # every arm cached: the table


def tune_budget(args: argparse.Namespace, best: str) -> dict[str, Any]:
    root = args.run_dir / f"budget{args.long_budget}"
    (name, lr, alpha, share), = [c for c in SCORE if f"score-{c[0]}" == best]
    recipe = compare_recipe(root, ["pair_sft", score_arm(name, lr, alpha, share)], args, budget=args.long_budget)
    recipe["base"] = {"model": {"path": str(args.run_dir / "score" / "sft" / "final")}, "warmup": recipe["base"]["warmup"],
                      "seed": recipe["base"]["seed"]}
    return json.loads(compare(root, recipe, "all").read_text())


def rrr_setup(args: argparse.Namespace, task: str) -> tuple[Path, Path, dict[str, Any]]:
    """RRR's recipe, start model and task fields for `task` (countdown: the comparison's base in the step
    format; function-calling: its own base, SFT then the format warm-up, as the reproduce run builds it)."""
    if task == "countdown":
        return RRR_RECIPE, args.run_dir / "score" / "base" / "final", STEPS_FORMAT
    root = args.run_dir / "function-calling"
    sft_small = {"steps": 30, "eval.num_problems": 10, "schedule.eval_every": 0} if args.quick else {}
    warm_small = {"steps": 10, "eval.num_problems": 10} if args.quick else {}
    validation = {"eval.split": "train", "eval.start": args.val_start}  # the base's own evaluations too
    if not (root / "warmup" / "summary.json").is_file():
        root.mkdir(parents=True, exist_ok=True)
        if not (root / "sft" / "summary.json").is_file():
            run(CLI + ["sft", "recipes/function-call-sft.yaml", *set_args({"run_dir": root / "sft", **validation, **sft_small})],
                root / "base.log")
        run(CLI + ["warmup", "recipes/function-call-warmup.yaml",
                   *set_args({"run_dir": root / "warmup", "model.path": root / "sft" / "final", **validation, **warm_small})],
            root / "base.log")
    return ROOT / "recipes" / "rrr-function-calling.yaml", root / "warmup" / "final", {}


def rrr_folder(args: argparse.Namespace, task: str, name: str, seed: int = 0) -> Path:
    """An RRR candidate's run folder: seed 0 is the tuning run (`name`), other seeds `name-seed<k>`."""
    return args.run_dir / f"rrr-{task}" / (name if seed == 0 else f"{name}-seed{seed}")


def rrr_row(args: argparse.Namespace, task: str, name: str, seed: int = 0) -> dict[str, Any]:
    """A finished candidate's accuracies before and after, its sampled tokens and training seconds."""
    s = json.loads((rrr_folder(args, task, name, seed) / "summary.json").read_text())
    return {"before": s["rrr_before"], "after": s["rrr_after"], "sampled_tokens": s.get("sampled_tokens"),
            "train_seconds": s.get("train_seconds")}


def rrr_run(args: argparse.Namespace, task: str, name: str, fields: dict[str, Any], seed: int = 0) -> None:
    """One RRR candidate on validation (a finished one is not run again)."""
    recipe, base, task_fields = rrr_setup(args, task)
    small = {"steps": 3, "prompts_per_step": 4, "rrr.eval_problems": 10} if args.quick else {}
    run_dir = rrr_folder(args, task, name, seed)
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    sets = {"run_dir": run_dir, "seed": seed, "model.path": base, **task_fields, "eval.split": "train",
            "eval.start": args.val_start, "rrr.eval_problems": args.val_problems, "eval.num_problems": args.val_problems,
            "schedule.eval_every": 0, **fields, **small}
    if not (run_dir / "summary.json").is_file():
        run(CLI + ["rrr", str(recipe), *set_args(sets)], run_dir.with_name(f"{run_dir.name}.log"))


def tune_rrr(args: argparse.Namespace, task: str) -> dict[str, Any]:
    rrr_setup(args, task)  # the base once, before the jobs share it
    candidates = {name: fields for name, fields in RRR.items() if name not in RRR_SKIP[task]}
    parallel([(args, task, name, fields) for name, fields in candidates.items()], rrr_run, args.jobs)
    return {name: {"fields": fields, **rrr_row(args, task, name)} for name, fields in candidates.items()}


def choose_rrr(rows: dict[str, Any]) -> str:
    """The best after-retry accuracy among runs whose first attempt stayed within 1 point; else the least
    forgetting, ties broken by after-retry accuracy."""
    kept = {n: r for n, r in rows.items() if r["after"]["first_accuracy"] >= r["before"]["first_accuracy"] - 0.01}
    if kept:
        return max(kept, key=lambda n: kept[n]["after"]["retry_accuracy"])
    return max(rows, key=lambda n: (round(rows[n]["after"]["first_accuracy"] - rows[n]["before"]["first_accuracy"], 6),
                                    rows[n]["after"]["retry_accuracy"]))


def rrr_over_seeds(args: argparse.Namespace, task: str, chosen: str) -> dict[str, Any]:
    """The chosen RRR setting on validation again with other seeds: was its gain over the untrained model
    more than one seed's noise? (Run after the choice, so it cannot change it.)"""
    fields = RRR[chosen]
    parallel([(args, task, chosen, fields, seed) for seed in args.check_seeds], rrr_run, args.jobs)
    per_seed = [{"seed": seed, **rrr_row(args, task, chosen, seed)} for seed in [0, *args.check_seeds]]
    return {"chosen": chosen, "per_seed": per_seed, **seed_changes(per_seed)}


def seed_changes(per_seed: list[dict[str, Any]]) -> dict[str, float]:
    """Mean and standard error over seeds of the change (points) in first-attempt and after-retry accuracy."""
    out: dict[str, float] = {}
    for key in ("first", "retry"):
        changes = [100 * (r["after"][f"{key}_accuracy"] - r["before"][f"{key}_accuracy"]) for r in per_seed]
        out[f"{key}_change"], out[f"{key}_change_se"] = sum(changes) / len(changes), stderr(changes)
    return out


def report(result: dict[str, Any], args: argparse.Namespace) -> str:
    lines = ["# Self-correction settings chosen on validation (train problems, never the test split)", "",
             f"`bench/selfcorrect_tune.py`: seed 0, {args.val_problems} train problems from index {args.val_start:,}, greedy; "
             "each candidate from the comparison's own base (recipes/selfcorrect-countdown-steps.yaml).", ""]
    if "score" in result:
        lines += ["## SCoRe (Stage I + II) at the comparison's budget", "", result["score"]["table"],
                  f"Chosen by validation Acc@t2: **{result['score']['chosen']}**.", ""]
    if "budget" in result:
        lines += [f"## The chosen SCoRe at {args.long_budget:,} sampled tokens", "", result["budget"]["table"]]
    for task in RRR_TASKS:
        if f"rrr-{task}" not in result:
            continue
        lines += [f"## Reflect-Retry-Reward ({RRR_TASKS[task]}): first attempt and after one retry, before -> after", "",
                  "| run | options | first attempt % | after retry % | sampled tokens | train s |", "|---|---|---|---|---|---|"]
        for name, r in result[f"rrr-{task}"]["runs"].items():
            b, a = r["before"], r["after"]
            opts = ", ".join(f"{k}={v}" for k, v in r["fields"].items()) or "the paper's"
            lines.append(f"| {name} | {opts} | {100 * b['first_accuracy']:.1f} -> {100 * a['first_accuracy']:.1f} | "
                         f"{100 * b['retry_accuracy']:.1f} -> {100 * a['retry_accuracy']:.1f} | {r['sampled_tokens'] or 0:,} | "
                         f"{r['train_seconds'] or 0:.0f} |")
        runs, chosen = result[f"rrr-{task}"]["runs"], result[f"rrr-{task}"]["chosen"]
        kept = any(r["after"]["first_accuracy"] >= r["before"]["first_accuracy"] - 0.01 for r in runs.values())
        rule = ("the best after-retry accuracy with the first attempt within 1 point" if kept else
                "no run kept the first attempt within 1 point: the least forgetting, ties broken by after-retry accuracy")
        lines += ["", f"Chosen ({rule}): **{chosen}**.", ""]
    if "rrr-seeds" in result:
        lines += ["## The chosen RRR settings over seeds (validation, after the choice)", "",
                  "| task | setting | seeds | first attempt change (points) | after-retry change (points) | per seed (first, retry) |",
                  "|---|---|---|---|---|---|"]
        for task, r in result["rrr-seeds"].items():
            seeds = "; ".join(f"s{x['seed']}: {100 * x['before']['first_accuracy']:.1f}->{100 * x['after']['first_accuracy']:.1f}, "
                              f"{100 * x['before']['retry_accuracy']:.1f}->{100 * x['after']['retry_accuracy']:.1f}" for x in r["per_seed"])
            lines.append(f"| {RRR_TASKS[task]} | {r['chosen']} | {len(r['per_seed'])} | {r['first_change']:+.1f} ± "
                         f"{r['first_change_se']:.1f} | {r['retry_change']:+.1f} ± {r['retry_change_se']:.1f} | {seeds} |")
        lines.append("")
    lines.append(f"Training time summed over every candidate: {training_minutes(result):.0f} min ({args.jobs} runs at a time, one "
                 f"torch thread each; evaluation not included). Wall time of the invocations that finished a study: "
                 f"{result['seconds'] / 60:.0f} min (an invocation stopped part-way is not counted; its runs resumed).")
    return "\n".join(lines) + "\n"


def training_minutes(result: dict[str, Any]) -> float:
    """Every candidate's own training seconds, from its run (complete however often the script was stopped and
    resumed, unlike the invocations' wall time): compare arms per seed, RRR runs one each."""
    seconds = sum(seed.get("train_seconds") or 0 for study in ("score", "budget") if study in result
                  for method in result[study]["summary"]["methods"].values() for seed in method["per_seed"])
    seconds += sum(r.get("train_seconds") or 0 for task in RRR_TASKS if f"rrr-{task}" in result
                   for r in result[f"rrr-{task}"]["runs"].values())
    seconds += sum(r.get("train_seconds") or 0 for check in result.get("rrr-seeds", {}).values()
                   for r in check["per_seed"] if r["seed"] != 0)  # seed 0 is the tuning run, counted above
    return seconds / 60


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    studies = ("score", "rrr-countdown", "rrr-function-calling", "budget", "rrr-seeds")
    p.add_argument("--only", nargs="+", choices=studies, default=studies)
    p.add_argument("--run-dir", type=Path, default=ROOT / "runs" / "selfcorrect-tune")
    p.add_argument("--val-start", type=int, default=1_000_000)
    p.add_argument("--val-problems", type=int, default=400)
    p.add_argument("--long-budget", type=int, default=1_000_000)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--check-seeds", type=int, nargs="+", default=[1, 2], help="rrr-seeds: the seeds beside 0")
    p.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run of the script")
    args = p.parse_args(argv)
    args.run_dir = args.run_dir.resolve()
    began = time.time()
    out_json = RESULTS / ("selfcorrect_tune_quick.json" if args.quick else "selfcorrect_tune.json")
    result: dict[str, Any] = json.loads(out_json.read_text()) if out_json.is_file() else {}
    prior = float(result.pop("seconds", 0.0))  # a resumed invocation adds its own time
    result["setup"] = {"val_start": args.val_start, "val_problems": args.val_problems, "long_budget": args.long_budget,
                       "recipe": str(RECIPE.relative_to(ROOT)), "rrr_recipe": str(RRR_RECIPE.relative_to(ROOT)), "seed": 0}

    def save() -> None:  # after every study, so a stopped invocation keeps what finished
        result["seconds"] = prior + time.time() - began
        RESULTS.mkdir(parents=True, exist_ok=True)
        out_json.write_text(json.dumps(repo_relative_paths(result), indent=2, default=str))
        out_json.with_suffix(".md").write_text(report(result, args))

    root = args.run_dir / "score"
    log("the base every candidate starts from (the comparison's recipe)")
    compare(root, compare_recipe(root, ["base"], args), "base")
    if "score" in args.only or "budget" in args.only:
        log("SCoRe candidates")
        s = tune_score(args)
        acc2 = {n: m["acc_t2"] for n, m in s["methods"].items() if n.startswith("score-")}
        result["score"] = {"summary": s, "chosen": max(acc2, key=acc2.__getitem__), "table": (root / "summary.md").read_text()}
        save()
    for task in RRR_TASKS:
        if f"rrr-{task}" in args.only:
            log(f"RRR candidates ({task})")
            rows = tune_rrr(args, task)
            result[f"rrr-{task}"] = {"runs": rows, "chosen": choose_rrr(rows)}
            save()
    if "budget" in args.only:
        log(f"the chosen SCoRe at {args.long_budget:,} tokens")
        b = tune_budget(args, result["score"]["chosen"])
        result["budget"] = {"summary": b, "table": (args.run_dir / f"budget{args.long_budget}" / "summary.md").read_text()}
        save()
    if "rrr-seeds" in args.only:
        for task in RRR_TASKS:
            if f"rrr-{task}" in result:
                log(f"the chosen RRR setting over seeds {args.check_seeds} ({task})")
                result.setdefault("rrr-seeds", {})[task] = rrr_over_seeds(args, task, result[f"rrr-{task}"]["chosen"])
                save()
    log(f"wrote {out_json} and {out_json.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
