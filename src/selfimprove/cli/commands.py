"""The commands that are not one method's training run: init-model, eval, demo, compare, tasks, models,
and the run of any registered method (`train_method`)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from selfimprove.config import DemoRecipe, EvalRecipe, InitRecipe, load_recipe

if TYPE_CHECKING:
    from selfimprove.methods.base import Method
    from selfimprove.policy.base import Sampler
    from selfimprove.tasks.base import Problem, Task


def train_method(method_cls: "type[Method[Any]]", args: argparse.Namespace) -> int:
    """Every method's command: validate the recipe, run with a progress bar, report."""
    from selfimprove.methods.base import load_method_recipe

    recipe = load_method_recipe(method_cls, args.recipe, args.set)  # before torch loads (below)
    from selfimprove.progress import console, step_bar
    from selfimprove.train.preflight import preflight
    from selfimprove.train.run_dir import allow_changed_recipe

    preflight(recipe)
    method = method_cls(recipe)
    with allow_changed_recipe(bool(getattr(args, "allow_changed_recipe", False))):
        summary = method.execute(step_bar)
    for line in method.report(summary):
        console.print(line, soft_wrap=True, markup=False)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """`selfimprove run RECIPE`: the method the recipe names."""
    from selfimprove.methods.base import find_method, method_of_file

    return train_method(find_method(method_of_file(args.recipe)), args)


def cmd_init_model(args: argparse.Namespace) -> int:
    recipe = load_recipe(InitRecipe, args.recipe, args.set)  # before torch loads (below)
    from selfimprove.policy.tiny import write_tiny_model
    from selfimprove.progress import console

    out = write_tiny_model(args.out, recipe.preset, recipe.seed, **recipe.overrides())
    params = sum(p.numel() for p in __import__("transformers").AutoModelForCausalLM.from_pretrained(out).parameters())
    console.print(f"wrote the built-in tiny model ({recipe.preset}, {params / 1e6:.2f}M parameters) to {out}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    """Self-correction methods from one base model at one sampled-token budget: summary.json + table."""
    from selfimprove.methods.compare import CompareRecipe

    recipe = load_recipe(CompareRecipe, args.recipe, args.set)  # before torch loads (below)
    from selfimprove.methods.compare import run_compare
    from selfimprove.progress import console, step_bar
    from selfimprove.train.preflight import preflight

    preflight(recipe)
    run_compare(recipe, bar=step_bar)
    root = Path(recipe.run_dir)
    console.print((root / "summary.md").read_text(), soft_wrap=True, markup=False)
    console.print(f"summary: {root / 'summary.json'}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    if args.self_refine and args.attempts == 1:
        print("selfimprove: --self-refine makes two attempts; it cannot go with --attempts 1", file=sys.stderr)
        return 2
    recipe = load_recipe(EvalRecipe, args.recipe, args.set)  # before torch loads (below)
    from selfimprove.eval.evaluate import evaluate_with
    from selfimprove.progress import console, step_bar
    from selfimprove.train.models import load_policy
    from selfimprove.train.preflight import preflight

    from selfimprove.rollout.conversation import env_run

    task = preflight(recipe)
    assert task is not None
    env = env_run(recipe.env, task, recipe.seed)
    if env is not None and (args.self_refine or args.attempts == 2):
        print("selfimprove: --attempts 2 and --self-refine are their own protocols; they do not run with env:",
              file=sys.stderr)
        return 2
    policy = load_policy(recipe.model, engine=recipe.engine, seed=recipe.seed)
    e = recipe.eval
    problems = task.distinct_problems(e.split, e.num_problems, e.start)
    if args.self_refine or args.attempts == 2:
        return _eval_self_correction(recipe, task, policy, problems, self_refine=args.self_refine)
    total = len(problems) * (2 if e.samples else 1)
    with step_bar("eval", total) as on_step:
        done = [0]

        def on_batch(n: int) -> None:
            done[0] += n
            on_step(done[0], {})

        result = evaluate_with(policy, task, problems, e, recipe.seed, on_batch=on_batch, env=env)
    out = Path(recipe.run_dir)
    out.mkdir(parents=True, exist_ok=True)
    report = {"model": recipe.model.path, "task": recipe.task.name, "split": e.split, **result.metrics("eval"),
              "num_problems": result.num_problems, "generated_tokens": result.generated_tokens, "sampling": result.sampling}
    (out / "eval.json").write_text(json.dumps(report, indent=2))
    (out / "eval_samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in result.all_records()))
    for line in eval_lines(result, e.split):
        console.print(line)
    print(json.dumps(report))
    return 0


def eval_lines(result: Any, split: str) -> list[str]:
    """What `selfimprove eval` prints: greedy accuracy (strict and lenient extraction side by side where
    the task reads a number from free text), then the sampled metrics with how they were sampled."""
    lines = [f"greedy accuracy {result.accuracy:.1%} on {result.num_problems} {split} problems"]
    if result.strict_accuracy is not None:
        lines[0] += (f" (lenient answer extraction; strict, only `#### N` or \\boxed{{}}: "
                     f"{result.strict_accuracy:.1%})")
    if result.sampling:
        how = (f"{result.sampling['samples']} samples per problem, temperature {result.sampling['temperature']:g}, "
               f"top_p {result.sampling['top_p']:g}")
        for k, v in result.pass_at_k.items():
            lines.append(f"pass@{k} {v:.1%} (unbiased; {how})")
        for k, v in result.maj_at_k.items():
            lines.append(f"maj@{k} {v:.1%} (majority vote over the first {k} samples' answers)")
        lines.append(f"avg@{result.sampling['samples']} {result.avg_at_n:.1%} (mean accuracy over the samples)")
    return lines


SELF_CORRECTION_ROWS = (
    ("acc_t1", "Acc@t1"), ("acc_t2", "Acc@t2"), ("delta", "Delta"), ("delta_i_to_c", "Delta_i->c"),
    ("delta_c_to_i", "Delta_c->i"), ("edit_distance_ratio", "edit-distance ratio"),
)


def _eval_self_correction(
    recipe: EvalRecipe, task: Task, policy: Sampler, problems: Sequence[Problem], *, self_refine: bool
) -> int:
    """`eval --attempts 2` (attempt, fixed instruction, attempt) or `--self-refine` (attempt, review,
    critique, retry): SCoRe's metrics, greedy, into eval.json and a table; records in eval_samples.jsonl."""
    from selfimprove.eval.selfcorrect import evaluate_self_refine, evaluate_two_attempts
    from selfimprove.progress import console, show_table, step_bar

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
    rows = []
    for key, name in SELF_CORRECTION_ROWS:
        value = metrics[key]
        rows.append([name, f"{value:.3f}" if key == "edit_distance_ratio" else f"{value:+.1%}" if key.startswith("delta") else f"{value:.1%}"])
    show_table(None, ["metric", "value"], rows)
    print(json.dumps(report))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    recipe = load_recipe(DemoRecipe, args.recipe, args.set)  # before torch loads (below)
    from selfimprove.methods.demo import run_demo
    from selfimprove.progress import console, show_table, step_bar
    from selfimprove.train.preflight import preflight

    preflight(recipe)
    s = run_demo(recipe, resume=args.resume, bar=step_bar)
    show_table(f"{s['task']}: held-out greedy accuracy on {s['eval_problems']} {s['eval_split']} problems",
               ["stage", "steps", "seconds", "accuracy"],
               [["SFT on demonstrations", s["sft_steps"], f"{s['sft_seconds']:.0f}", f"{s['sft_accuracy']:.1%}"],
                ["+ GRPO on the verifier's reward", s["rl_steps"], f"{s['rl_seconds']:.0f}", f"{s['rl_accuracy']:.1%}"]])
    console.print(f"RL gain: {s['gain_points']:+.1f} points; wall time {s['wall_seconds'] / 60:.1f} min")
    console.print(f"summary: {Path(recipe.run_dir) / 'summary.json'}; learning curve: {s['learning_curve']}")
    return 0


def cmd_tasks(args: argparse.Namespace) -> int:
    """`selfimprove tasks`: every task (registered and from entry points) with an example problem;
    `--params NAME` (a name or `package.module:Class`): every parameter with its type, default and doc."""
    from rich.console import Console

    from selfimprove.tasks.base import TASKS
    from selfimprove.tasks.plugins import make_task, plugin_names, resolve_task

    console = Console()
    if args.params:
        return _print_params(console, resolve_task(args.params))
    for name in TASKS.names() + [n for n in plugin_names() if n not in TASKS]:
        try:
            task = make_task(name)
            problem = task.problem("train", 0)
        except Exception as err:  # a task that needs params (a file) still gets listed
            console.print(f"[bold]{name}[/bold]: (needs parameters: {str(err).splitlines()[0] if str(err) else type(err).__name__})")
            continue
        console.print(f"[bold]{name}[/bold]: {task.describe()}")
        console.print(f"  prompt: {problem.prompt!r}")
        if problem.demonstration:
            demo = task.target_text(problem)
            console.print(f"  demonstration: {demo!r} -> {task.verify(problem, demo).reason}")
        else:
            console.print("  (no demonstration)")
    console.print("parameters of a task: selfimprove tasks --params NAME")
    return 0


def cmd_envs(args: argparse.Namespace) -> int:
    """`selfimprove envs`: the environments (registered and from entry points), their parameters, and the
    built-in tools with their schemas' descriptions."""
    from rich.console import Console

    from selfimprove.envs.builtin_tools import BUILTIN_TOOLS
    from selfimprove.envs.plugins import env_names, make_tools, resolve_env

    console = Console()
    for name in env_names():
        cls = resolve_env(name)
        console.print(f"[bold]{name}[/bold]: {(cls.__doc__ or '').strip().splitlines()[0]}")
        _print_params(console, cls, "env.params", indent="    ")
    console.print("[bold]tools[/bold] (env.tools; or package.module:function, a typed function with an Args: docstring):")
    for tool in make_tools(list(BUILTIN_TOOLS)):
        console.print(f"  {tool.name}({', '.join(tool.parameters)}): {tool.schema['function']['description']}",
                      markup=False, highlight=False)
    return 0


def _type_name(annotation: Any) -> str:
    text = getattr(annotation, "__name__", None) if isinstance(annotation, type) else None
    return text or str(annotation).replace("typing.", "")


def _print_params(console: Any, cls: Any, section: str = "task.params", indent: str = "") -> int:
    """One line per parameter (`name: type = default`) and its description under it: plain text, so it
    reads the same in a narrow terminal, a pipe or a file."""
    from pydantic_core import PydanticUndefined

    console.print(f"{indent}{section} of {cls.name} ({cls.__module__}.{cls.__qualname__}):", markup=False, highlight=False)
    for field_name, field in cls.Config.model_fields.items():
        if field.default is PydanticUndefined:
            default = "(empty)" if field.default_factory is not None else "(required)"
        else:
            default = repr(field.default)
        console.print(f"{indent}  {field_name}: {_type_name(field.annotation)} = {default}", markup=False, highlight=False,
                      soft_wrap=True)
        if field.description:
            console.print(f"{indent}      {field.description}", markup=False, highlight=False, soft_wrap=True)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """`selfimprove export RUN_DIR --to DIR` (see `cli.export`)."""
    from selfimprove.cli.export import export_run
    from selfimprove.progress import console

    index = export_run(args.run_dir, args.to)
    for entry in index:
        if "skipped" in entry:
            console.print(f"skipped {entry['source']}: {entry['skipped']}", markup=False)
        else:
            console.print(f"{entry['kind']:12s} {entry['rows']:7d} rows  {entry['source']} -> {entry['path']}", markup=False)
    if not any("path" in e for e in index):
        print(f"selfimprove: nothing to export under {args.run_dir} (no rollouts, pairs, kept paths, search results or "
              "eval samples)", file=sys.stderr)
        return 2
    console.print(f"index: {Path(args.to) / 'index.json'}  (read a dataset back with datasets.load_from_disk)", markup=False)
    return 0


def cmd_reproduce(args: argparse.Namespace) -> int:
    """`selfimprove reproduce [--quick] ...`: the repository's `bench/reproduce.py` (it drives the benchmarks
    and recipes of a clone, so it runs from one)."""
    import subprocess

    repo = Path(__file__).resolve().parents[3]
    script = repo / "bench" / "reproduce.py"
    if not script.is_file():
        print(f"selfimprove: reproduce runs from a clone of the repository (no {script})", file=sys.stderr)
        return 2
    forwarded = (["--quick"] if args.quick else []) + (["--report"] if args.report else []) + ["--jobs", str(args.jobs)]
    forwarded += (["--only", *args.only] if args.only else []) + (["--run-dir", args.run_dir] if args.run_dir else [])
    return subprocess.run([sys.executable, str(script), *forwarded], cwd=repo).returncode


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
