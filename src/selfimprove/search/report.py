"""`selfimprove report RUN...`: accuracy against budget for several search runs (SPECS §6).

Searches only compare at equal budget, so every run's points (one per sweep setting) go on one plot of
accuracy against mean generated tokens per problem (log x: budgets grow geometrically), one line per
run, and into one Markdown table with the policy and critic calls. A run whose critic read the gold
answers is marked "(gold)": its accuracy is not a test accuracy.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from selfimprove.eval.report import markdown_table, save_figure

SUMMARY = "summary.json"
PLOT = "search_report.png"
TABLE = "search_report.md"
TABLE_HEADER = ("run", "search", "setting", "accuracy", "tokens/problem", "policy calls", "critic calls", "problems")


@dataclass(frozen=True)
class RunPoints:
    """One run's label, search and points, read from its summary.json."""

    label: str
    search: str
    gold: bool
    points: list[dict[str, Any]]


def read_run(run_dir: str | Path, label: str | None = None) -> RunPoints:
    path = Path(run_dir) / SUMMARY
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} has no {SUMMARY} (is it a `selfimprove search` run?)")
    summary = json.loads(path.read_text())
    if not summary.get("points"):
        raise ValueError(f"{path} has no points (not a `selfimprove search` summary)")
    return RunPoints(label or Path(run_dir).name, summary.get("search", "?"), bool(summary.get("uses_gold_answers")), summary["points"])


def run_labels(run_dirs: Sequence[str | Path]) -> list[str]:
    """Each run's folder name, or its whole path where two runs share a folder name."""
    names = [Path(d).name or str(d) for d in run_dirs]
    return [n if names.count(n) == 1 else str(d) for n, d in zip(names, run_dirs)]


def setting_text(setting: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in setting.items()) or "-"


def table_rows(runs: Sequence[RunPoints]) -> list[list[Any]]:
    rows: list[list[Any]] = []
    for run in runs:
        for p in run.points:
            rows.append([
                run.label + (" (gold)" if run.gold else ""), run.search, setting_text(p["setting"]),
                f"{p['accuracy']:.1%}", f"{p['mean_tokens']:.1f}", f"{p['mean_policy_calls']:.2f}",
                f"{p['mean_critic_calls']:.2f}", p["problems"],
            ])
    return rows


def accuracy_plot(runs: Sequence[RunPoints], out: str | Path) -> Path:
    """Accuracy against mean tokens per problem (log x), one line per run, points in token order."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for run in runs:
        points = sorted((p["mean_tokens"], p["accuracy"], setting_text(p["setting"])) for p in run.points if p["mean_tokens"] > 0)
        if not points:
            continue
        xs, ys, names = zip(*points)
        ax.plot(xs, ys, marker="o", label=f"{run.label} ({run.search})" + (" [gold answers]" if run.gold else ""))
        if len(points) > 1:
            for x, y, name in points:
                ax.annotate(name, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.set_xscale("log")
    ax.margins(x=0.08)  # room for the outermost points and their labels
    ax.xaxis.set_major_formatter(ScalarFormatter())  # plain numbers (16, 64, 256), not 1.6x10^1
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("generated tokens per problem (mean, log scale)")
    ax.set_ylabel("accuracy")
    ax.set_ylim(-0.03, 1.03)  # points at 0 or 1 stay visible
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="best", fontsize=8)
    return save_figure(fig, out)


def report(run_dirs: Sequence[str | Path], out: str | Path) -> tuple[Path, Path]:
    """Write `search_report.png` and `search_report.md` into `out`; return their paths."""
    if not run_dirs:
        raise ValueError("report needs at least one run directory")
    runs = [read_run(d, label) for d, label in zip(run_dirs, run_labels(run_dirs))]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    plot = accuracy_plot(runs, out / PLOT)
    table = out / TABLE
    table.write_text(
        "# Accuracy against budget\n\n"
        "Means per problem; tokens are every token the policy generated for a problem.\n\n"
        + markdown_table(TABLE_HEADER, table_rows(runs))
        + f"\n![accuracy against tokens]({PLOT})\n"
    )
    return plot, table
