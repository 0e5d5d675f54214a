"""Search and critics commands: `critic train`, `search`, `report`."""

from __future__ import annotations

import argparse
import sys

from selfimprove.config import load_recipe


def cmd_critic_train(args: argparse.Namespace) -> int:
    """Label the policy's rollouts by Monte Carlo, train value/PRM/ORM critics, print held-out metrics."""
    from selfimprove.critics.recipe import CriticRecipe

    recipe = load_recipe(CriticRecipe, args.recipe, args.set)  # before torch loads (below)
    from selfimprove.critics.run import run_critic_training
    from selfimprove.progress import console, show_table, step_bar
    from selfimprove.train.preflight import preflight

    preflight(recipe)
    summary = run_critic_training(recipe, bar=step_bar)
    rows = []
    for kind, r in summary["critics"].items():
        a = r["after"]
        rows.append([kind, r["held_out_examples"], f"{a['positive_rate']:.2f}", f"{a['precision']:.3f}", f"{a['recall']:.3f}",
                     f"{a['accuracy']:.3f}", f"{a['auroc']:.3f}", f"{a.get('within_auroc', 0.5):.3f}", f"{a['ece']:.3f}",
                     f"{a['brier']:.3f}"])
    show_table(f"critics of {summary['model']} on held-out {summary['task']} problems",
               ["critic", "examples", "positive", "precision", "recall", "accuracy", "AUROC", "within AUROC", "ECE", "Brier"], rows)
    console.print(f"critics and summary.json in {recipe.run_dir}")
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    """Run a search (or a sweep) on held-out problems; print accuracy and spend per point."""
    from selfimprove.search.recipe import SearchRecipe

    recipe = load_recipe(SearchRecipe, args.recipe, args.set)  # before torch loads (below)
    from selfimprove.progress import console, show_table, step_bar
    from selfimprove.search.run import run_search_eval
    from selfimprove.train.preflight import preflight

    preflight(recipe)
    summary = run_search_eval(recipe, bar=step_bar)
    rows = [[", ".join(f"{k}={v}" for k, v in p["setting"].items()) or "-", f"{p['accuracy']:.1%}", f"{p['mean_tokens']:.1f}",
             f"{p['mean_policy_calls']:.2f}", f"{p['mean_critic_calls']:.2f}", f"{p['seconds']:.1f}"] for p in summary["points"]]
    show_table(f"{summary['search']} on {summary['num_problems']} {summary['split']} {summary['task']} problems",
               ["setting", "accuracy", "tokens/problem", "policy calls", "critic calls", "seconds"], rows)
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
