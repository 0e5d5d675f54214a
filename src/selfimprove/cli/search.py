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
    """One self-contained HTML page of the runs (`eval/html_report.py`); for search runs also accuracy
    against tokens per problem as a PNG and a Markdown table (printed)."""
    from pathlib import Path

    from selfimprove.eval.html_report import write_html_report
    from selfimprove.progress import console
    from selfimprove.search.report import SUMMARY, report

    out = Path(args.out)
    searches = [r for r in args.runs if _is_search(Path(r) / SUMMARY)]
    try:
        if searches and len(searches) == len(args.runs):
            plot, table = report(args.runs, out)
            print(table.read_text())
            console.print(f"wrote {plot} and {table}")
        page = write_html_report(args.runs, out / "report.html")
    except (ValueError, FileNotFoundError) as err:  # a folder with no run in it
        print(f"selfimprove: {err}", file=sys.stderr)
        return 2
    console.print(f"wrote {page} (one self-contained page: open it in a browser)")
    return 0


def _is_search(path: object) -> bool:
    import json
    from pathlib import Path

    try:
        return bool(json.loads(Path(str(path)).read_text()).get("points"))
    except (OSError, ValueError, AttributeError):
        return False
