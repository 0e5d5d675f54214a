"""Cost that does not grow with the run: a long GRPO run on the tiny model, its seconds per step at the
start against the end, and what checkpoints and memory do on the way (issue 25).

The run is the demo's GRPO (Countdown, 16 prompts x 8 samples, 24 new tokens, lr 5e-5) for `--steps`
steps from the demo's SFT model (`runs/demo/sft/final`, made by `make demo`; else a 300-step SFT here),
with everything a real run does on the step's path: rollouts written to the run's buffer, metrics
lines and TensorBoard events, a checkpoint every `--checkpoint-every` steps (two kept), resume
bookkeeping. Periodic evaluation is off (it would put spikes into the windows compared). It resumes
where it stopped (`run_rl`'s own checkpoints); the bench's own samples (RSS, checkpoint sizes) go to
`samples.jsonl` beside the run.

Report: mean and standard error of `time/step` over the first and the last `--window` steps and their
ratio (the issue asks for the last within 10% of the first), checkpoint save seconds and size at the
first and last checkpoints, the rollout buffer's size, the process' peak resident memory.

    OMP_NUM_THREADS=1 .venv/bin/python bench/long_run.py            # ~15-20 min on the 2-core machine
    .venv/bin/python bench/long_run.py --report                      # the table from a finished run
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, line_bar, log, repo_relative, stderr  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--window", type=int, default=200, help="steps compared at the start and at the end (default 200)")
    ap.add_argument("--checkpoint-every", type=int, default=100)
    ap.add_argument("--model", type=Path, default=Path("runs/demo/sft/final"))
    ap.add_argument("--run-dir", type=Path, default=Path("runs/long-run"))
    ap.add_argument("--report", action="store_true", help="only write the report of the run in --run-dir")
    return ap.parse_args(argv)


def rss_mib() -> float:
    """This process' resident memory now (Linux), MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def folder_mib(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


def starting_model(args: argparse.Namespace) -> Path:
    if args.model.exists():
        return args.model
    from selfimprove.config import ModelConfig, Schedule, SFTRecipe, TaskSpec
    from selfimprove.methods.sft import run_sft

    log(f"{args.model} not found: a 300-step SFT of the tiny model first")
    sft = run_sft(SFTRecipe(run_dir=str(args.run_dir / "sft"), model=ModelConfig(path="tiny"), task=TaskSpec(**TASK),
                            steps=300, schedule=Schedule(checkpoint_every=300)))
    return Path(sft["model"])


TASK = {"name": "countdown", "params": {"num_numbers": 3, "min_number": 1, "max_number": 20, "min_target": 10,
                                        "max_target": 50, "format": "expression"}}


def run(args: argparse.Namespace) -> None:
    from selfimprove.config import RLRecipe
    from selfimprove.methods.rl import run_rl

    model = starting_model(args)
    grpo = args.run_dir / "grpo"
    recipe = RLRecipe.model_validate({
        "run_dir": str(grpo), "seed": 0, "model": {"path": str(model)}, "task": TASK, "steps": args.steps,
        "prompts_per_step": 16, "first_problem": 2000,
        "sampling": {"n": 8, "temperature": 1.0, "max_new_tokens": 24},
        "loss": {"estimator": "grpo", "aggregation": "seq_mean", "kl_coef": 0.0},
        "optim": {"lr": 5e-5, "warmup_steps": 10, "schedule": "cosine", "min_lr_ratio": 0.1, "micro_batch_size": 128},
        "schedule": {"eval_every": 0, "checkpoint_every": args.checkpoint_every, "keep_checkpoints": 2},
        "eval": {"num_problems": 100, "max_new_tokens": 24},
    })
    samples = args.run_dir / "samples.jsonl"
    args.run_dir.mkdir(parents=True, exist_ok=True)
    with line_bar("long GRPO run", args.steps, keys=("train/reward", "time/step")) as bar, samples.open("a") as out:
        def on_step(step: int, metrics: dict[str, Any]) -> None:
            bar(step, metrics)
            if "time/step" not in metrics:
                return
            row: dict[str, Any] = {"step": step, "rss_mib": round(rss_mib(), 1)}
            if step > 1 and (step - 1) % args.checkpoint_every == 0:  # the checkpoint written after step - 1 exists now
                saved = grpo / "checkpoints" / f"step_{step - 1:07d}"
                row["checkpoint"] = {"step": step - 1, "mib": round(folder_mib(saved), 3) if saved.exists() else None,
                                     "seconds": metrics.get("time/checkpoint")}
            out.write(json.dumps(row) + "\n")
            out.flush()

        run_rl(recipe, on_step=on_step)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    (args.run_dir / "peak.json").write_text(json.dumps({"peak_rss_mib_this_invocation": round(peak, 1)}))


def report(args: argparse.Namespace) -> dict[str, Any]:
    from selfimprove.train.runlog import read_metrics

    rows = [r for r in read_metrics(args.run_dir / "grpo" / "metrics.jsonl") if "time/step" in r]
    if len(rows) < 2 * args.window:
        raise SystemExit(f"{args.run_dir}: {len(rows)} steps logged, need {2 * args.window}")
    first = [r["time/step"] for r in rows[: args.window]]
    last = [r["time/step"] for r in rows[-args.window :]]
    samples = [json.loads(x) for x in (args.run_dir / "samples.jsonl").read_text().splitlines() if x.strip()]
    checkpoints = [s["checkpoint"] for s in samples if s.get("checkpoint")]
    rss = [s["rss_mib"] for s in samples]
    peak = json.loads((args.run_dir / "peak.json").read_text()) if (args.run_dir / "peak.json").exists() else {}
    phases = sorted({k for r in rows for k in r if k.startswith("time/") and k != "time/step"})
    by_phase = {k: (statistics.mean(r.get(k, 0.0) for r in rows[: args.window]),
                    statistics.mean(r.get(k, 0.0) for r in rows[-args.window :])) for k in phases}
    result = {
        "run_dir": repo_relative(args.run_dir), "steps": len(rows), "window": args.window,
        "first_s_per_step": statistics.mean(first), "first_se": stderr(first),
        "last_s_per_step": statistics.mean(last), "last_se": stderr(last),
        "ratio_last_to_first": statistics.mean(last) / statistics.mean(first),
        "phases_first_last": by_phase,
        "checkpoints": checkpoints, "rss_mib_first": rss[0] if rss else None, "rss_mib_last": rss[-1] if rss else None,
        "rss_mib_max_sampled": max(rss) if rss else None, **peak,
        "rollout_buffer_mib": round(folder_mib(args.run_dir / "grpo" / "buffers"), 2),
        "wall_seconds": rows[-1].get("seconds"),
    }
    lines = [
        "# A long GRPO run: does a step cost more at the end? (issue 25)", "",
        f"Command: `OMP_NUM_THREADS=1 .venv/bin/python bench/long_run.py` (see its docstring for the setup); "
        f"{len(rows)} steps, {result['wall_seconds']:.0f} s of run time.", "",
        "| | first steps | last steps |", "|---|---:|---:|",
        f"| seconds per step (mean ± s.e., {args.window} steps) | {result['first_s_per_step']:.4f} ± {result['first_se']:.4f} "
        f"| {result['last_s_per_step']:.4f} ± {result['last_se']:.4f} |",
    ]
    lines += [f"| {k} | {a:.4f} | {b:.4f} |" for k, (a, b) in by_phase.items()]
    if checkpoints:
        c0, c1 = checkpoints[0], checkpoints[-1]
        lines.append(f"| checkpoint (step {c0['step']} / {c1['step']}): MiB | {c0['mib']} | {c1['mib']} |")
        lines.append(f"| checkpoint save seconds | {c0['seconds']} | {c1['seconds']} |")
    lines.append(f"| resident memory, MiB (sampled at steps) | {result['rss_mib_first']} | {result['rss_mib_last']} |")
    lines += ["", f"Last / first: **{result['ratio_last_to_first']:.3f}** (the issue asks for at most 1.10). "
              f"Peak resident memory of the last invocation: {peak.get('peak_rss_mib_this_invocation', 'n/a')} MiB; "
              f"the rollout buffer holds {result['rollout_buffer_mib']} MiB at the end."]
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "long_run.md").write_text("\n".join(lines) + "\n")
    (RESULTS / "long_run.json").write_text(json.dumps(result, indent=2) + "\n")
    log(f"wrote {RESULTS / 'long_run.md'} and .json: last/first {result['ratio_last_to_first']:.3f}")
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if not args.report:
        run(args)
    report(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
