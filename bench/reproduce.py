"""One command for every comparison the project has, and the report of which seed-paper claims held.

    selfimprove reproduce              # the full run: hours on 2 cores; resumes where it stopped
    selfimprove reproduce --quick      # a smoke run of the same studies in tiny sizes (6-11 min measured here)
    selfimprove reproduce --report     # only rewrite the report from what has run so far

Studies (each a list of commands that resume themselves; a finished study is marked DONE and skipped):
demo (SFT vs SFT + GRPO), selfcorrect (SCoRe, STaR, Pair-SFT, self-refine and the ablations, Countdown in
the step format), rrr-countdown and rrr-function-calling (Reflect-Retry-Reward as in the paper and with
the settings chosen on validation, `RRR_TUNED`), search (greedy, votes, best-of-N, beam, MCTS, eta-MCTS at a budget; seed 0
writes bench/results/search_budget.*, seed 1 search_budget_seed1.*), r3
(R^3 against RL and SFT, with the fixed judgement of issue 26: `runs/r3-fixed`), alphallm (AlphaLLM's
loop against RFT and GRPO, and search data before GRPO: 3 rounds, 3 seeds, `runs/alphallm-loop`),
critic-levers (what lifts the learned critics' ranking: `bench/critic_levers.py`) and test-time (every
test-time strategy against sampled tokens with those critics: `bench/test_time.py`), capacity (the
demo's GRPO gain and SCoRe's and Pair-SFT's Delta at three model sizes, on validation:
`bench/capacity.py`). The selfcorrect
study includes SCoRe started from a Pair-SFT model (`pair_sft_then_score`). Two studies
run at a time, one torch thread each (two cores). The report is `REPRODUCTION.md` and
`bench/results/reproduction.json` (`--quick`: under its run folder): for each claim the paper's figure,
ours (mean ± standard error over seeds), the verdict, and the measured figures behind it.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from common import run_logged, set_args  # noqa: E402  (bench/common.py)
from reproduce_claims import planned_seeds, write_report  # noqa: E402  (bench/reproduce_claims.py)

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "selfimprove.cli"]
BENCH = ROOT / "bench"


@dataclass
class Study:
    name: str
    commands: list[list[str]]
    after: tuple[str, ...] = ()  # studies whose outputs this one starts from
    folder: Path = field(default_factory=Path)


# RRR's settings chosen on validation problems (bench/selfcorrect_tune.py, bench/results/selfcorrect_tune.md):
# the best after-retry accuracy among the runs whose first attempt stayed within 1 point of before.
# Both tasks: lr 1e-5 with GRPO on first attempts (weight 0.5, 4 attempts). On function calling no candidate
# kept the first attempt within 1 point (lr 1e-5 with or without first attempts: -1.4), so the rule fell back
# to the least forgetting, ties broken by the after-retry accuracy (40.2 against 39.8).
FIRST_ATTEMPTS: dict[str, object] = {"optim.lr": 1e-5, "rrr.failure_samples": 4, "rrr.first_attempt_weight": 0.5}
RRR_TUNED: dict[str, dict[str, object]] = {"countdown": FIRST_ATTEMPTS, "function-calling": FIRST_ATTEMPTS}


def studies(quick: bool, root: Path) -> list[Study]:
    """The commands of every study, in full or quick sizes."""
    seeds3, seeds2 = planned_seeds(quick)
    out: list[Study] = []
    demo = Study("demo", [], folder=root / "demo")
    for s in seeds2:
        small = {"init.preset": "small", "sft.steps": 40, "rl.steps": 6, "eval.num_problems": 30, "sft.schedule.eval_every": 0,
                 "rl.schedule.eval_every": 0} if quick else {}
        run = demo.folder / f"seed{s}"
        demo.commands.append(CLI + ["demo", "recipes/demo.yaml", *set_args({"seed": s, "init.seed": s, "run_dir": run, **small}), "--resume"])
    out.append(demo)
    sc = root / "selfcorrect"
    small = {"base.sft.steps": 40, "base.sft.eval.num_problems": 20, "base.warmup.steps": 10, "base.warmup.eval.num_problems": 20,
             "budget_tokens": 1500, "eval.num_problems": 30, "defaults.score.eval.num_problems": 20,
             "defaults.star.eval.num_problems": 20, "defaults.pair_sft.eval.num_problems": 20} if quick else {}
    out.append(Study("selfcorrect", [CLI + ["compare", "recipes/selfcorrect-countdown-steps.yaml",
                                            *set_args({"run_dir": sc, "seeds": seeds3, **small})]], folder=sc))
    for task, recipe, base_of in (("countdown", "recipes/rrr-countdown.yaml", "selfcorrect"),
                                  ("function-calling", "recipes/rrr-function-calling.yaml", None)):
        folder = root / f"rrr-{task}"
        study = Study(f"rrr-{task}", [], after=(base_of,) if base_of else (), folder=folder)
        if base_of:
            base = sc / "base" / "final"
            task_set = {"task.params.format": "steps", "sampling.max_new_tokens": 32, "eval.max_new_tokens": 32}
        else:  # its own base: SFT on function calls, then the format warm-up
            base = folder / "warmup" / "final"
            sft_small = {"steps": 30, "eval.num_problems": 10, "schedule.eval_every": 0} if quick else {}
            study.commands.append(CLI + ["sft", "recipes/function-call-sft.yaml", *set_args({"run_dir": folder / "sft", **sft_small})])
            warm_small = {"steps": 10, "eval.num_problems": 10} if quick else {}
            study.commands.append(CLI + ["warmup", "recipes/function-call-warmup.yaml",
                                         *set_args({"run_dir": folder / "warmup", "model.path": folder / "sft" / "final", **warm_small})])
            task_set = {}
        small = {"steps": 3, "prompts_per_step": 4, "rrr.eval_problems": 10, "eval.num_problems": 10, "schedule.eval_every": 0} if quick else {}
        variants = {"rrr": {}, "rrr-tuned": RRR_TUNED[task]}
        for variant, extra in variants.items():
            for s in seeds3:
                study.commands.append(CLI + ["rrr", recipe, *set_args({"run_dir": folder / variant / f"seed{s}", "seed": s,
                                                                    "model.path": base, **task_set, **extra, **small})])
        out.append(study)
    search = root / "search"
    quick_search = ["--sft-steps", "40", "--label-problems", "32", "--test-problems", "20", "--simulations", "1", "2",
                    "--only", "greedy", "majority_vote", "best_of_n-orm", "eta-mcts"] if quick else []
    out.append(Study("search", [[sys.executable, str(BENCH / "search_budget.py"), "--run-dir", str(search / f"seed{s}"), "--seed", str(s),
                                 "--out", "search_budget" if s == 0 else f"search_budget_seed{s}", *quick_search] for s in seeds2],
                     folder=search))
    r3 = root / "r3" if quick else ROOT / "runs" / "r3-fixed"  # r3-bench: before issue 26 fixed R^3's judgement
    out.append(Study("r3", [[sys.executable, str(BENCH / "r3.py"), "--run-dir", str(r3), *(["--quick"] if quick else
                                                                                          ["--budget", "400000", "--eval-every", "25"])]],
                     folder=r3))
    alpha = root / "alphallm" if quick else ROOT / "runs" / "alphallm-loop"  # alphallm-bench: 2 rounds, value + ORM
    out.append(Study("alphallm", [[sys.executable, str(BENCH / "alphallm.py"), "--run-dir", str(alpha),
                                   *(["--quick"] if quick else ["--gamma", "0.3"])]], folder=alpha))
    # the critics' levers and test-time compute share the AlphaLLM bench's SFT base (made by either if missing)
    base = root / "alphallm-base" if quick else ROOT / "runs" / "alphallm-bench"
    levers = root / "critic-levers" if quick else ROOT / "runs" / "critic-levers"
    small = ["--sft-steps", "40", "--chunk-problems", "32", "--chunks", "2", "--extra-chunks", "0", "--val-problems", "16",
             "--bon-problems", "8", "--bon-samples", "8", "--ceiling-rollouts", "4", "--epochs", "1"] if quick else []
    out.append(Study("critic-levers", [[sys.executable, str(BENCH / "critic_levers.py"), stage, "--run-dir", str(levers),
                                        "--base-dir", str(base), *small] for stage in ("labels", "arms", "ceiling", "bon", "report")],
                     folder=levers))
    tt = root / "test-time" if quick else ROOT / "runs" / "test-time"
    small = ["--sft-steps", "40", "--test-problems", "20", "--val-problems", "12", "--problems-per-batch", "10"] if quick else []
    out.append(Study("test-time", [[sys.executable, str(BENCH / "test_time.py"), "--run-dir", str(tt), "--base-dir", str(base),
                                    "--levers-dir", str(levers), "--seeds", *map(str, seeds2), *small]],
                     after=("critic-levers",), folder=tt))
    capacity = root / "capacity" if quick else ROOT / "runs" / "capacity"
    out.append(Study("capacity", [[sys.executable, str(BENCH / "capacity.py"), "run", "--run-dir", str(capacity),
                                   *(["--quick"] if quick else [])]], folder=capacity))
    return out


def run_study(study: Study, log_dir: Path, env: dict[str, str]) -> float:
    """Run a study's commands in order (each resumes itself); mark it DONE. Returns its seconds."""
    marker = log_dir / f"{study.name}.DONE"
    if marker.is_file():
        return 0.0
    began = time.time()
    for command in study.commands:
        run_logged(command, log_dir / f"{study.name}.log", env, ROOT)
    seconds = time.time() - began
    marker.write_text(f"{seconds:.0f}\n")
    return seconds


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes everywhere: a smoke run of every study")
    p.add_argument("--only", nargs="+", default=None, help="run only these studies (then report everything there is)")
    p.add_argument("--report", action="store_true", help="only rewrite the report")
    p.add_argument("--jobs", type=int, default=2, help="studies run at once (one torch thread each)")
    p.add_argument("--run-dir", type=Path, default=None, help="default: runs/reproduce (runs/reproduce-quick with --quick)")
    args = p.parse_args(argv)
    root = (args.run_dir or ROOT / "runs" / ("reproduce-quick" if args.quick else "reproduce")).resolve()
    results = root / "results" if args.quick else BENCH / "results"
    report = root / "REPRODUCTION.md" if args.quick else ROOT / "REPRODUCTION.md"
    log_dir = root / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    all_studies = studies(args.quick, root)
    if not args.report:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "SELFIMPROVE_BENCH_RESULTS": str(results), "TOKENIZERS_PARALLELISM": "false"}
        wanted = [s for s in all_studies if args.only is None or s.name in args.only]
        unknown = set(args.only or []) - {s.name for s in all_studies}
        if unknown:
            print(f"reproduce: unknown studies {sorted(unknown)} (known: {', '.join(s.name for s in all_studies)})", file=sys.stderr)
            return 2
        print(f"reproduce: {len(wanted)} studies, {args.jobs} at a time, logs in {log_dir}", flush=True)
        pending = {s.name: s for s in wanted}
        # this invocation's span of wall time; the report merges the spans of every invocation (across sessions,
        # and overlapping ones when two invocations ran different studies at once)
        began = time.time()
        span_file = log_dir / "spans" / f"{began:.0f}-{os.getpid()}"
        span_file.parent.mkdir(exist_ok=True)
        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            running: dict[str, object] = {}
            started: dict[str, float] = {}  # each running study's own span (spans/<study>/), summed by the report
            waiting: set[str] = set()
            while pending or running:
                # a study's inputs are ready when its dependencies are marked DONE (here or by another invocation)
                finished = {s.name for s in all_studies if (log_dir / f"{s.name}.DONE").is_file()}
                for name, study in list(pending.items()):
                    missing = [d for d in study.after if d not in finished]
                    if missing and not any(d in pending or d in running for d in missing) and name not in waiting:
                        waiting.add(name)
                        print(f"  {name} waits for {', '.join(missing)} (not in this invocation: run it, here or in another)", flush=True)
                    if len(running) < args.jobs and not missing:
                        print(f"  start {name}", flush=True)
                        running[name] = pool.submit(run_study, study, log_dir, env)
                        started[name] = time.time()
                        del pending[name]
                for name, future in list(running.items()):
                    if future.done():  # type: ignore[attr-defined]
                        seconds = future.result()  # type: ignore[attr-defined]
                        print(f"  done  {name} ({seconds / 60:.0f} min)", flush=True)
                        del running[name]
                span_file.write_text(f"{began:.0f} {time.time():.0f}\n")
                for name in running:
                    study_span = log_dir / "spans" / name / f"{started[name]:.0f}-{os.getpid()}"
                    study_span.parent.mkdir(exist_ok=True)
                    study_span.write_text(f"{started[name]:.0f} {time.time():.0f}\n")
                time.sleep(2)
    claims = write_report(root, results, report, quick=args.quick, studies=[s.name for s in all_studies], log_dir=log_dir)
    held = sum(c["verdict"].startswith("reproduced") and "partial" not in c["verdict"] for c in claims)
    print(f"reproduce: {held} of {len(claims)} claims held in direction (partial ones not counted); {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
