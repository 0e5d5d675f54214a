"""`selfimprove report RUN_DIR [RUN_DIR...]`: one self-contained HTML page to look at runs.

For every training run found under the folders given (a run is a folder with `metrics.jsonl`; a
comparison's or the demo's root holds several): its summary, learning curves (held-out accuracy, train
reward and loss against steps, all runs on one figure each), the distribution of the rewards it
trained on per step (median and 10-90% band, from `buffers/rollouts.jsonl`), and sample episodes with
their rewards and verdicts (the last trained ones, and the final evaluation's). A comparison's root
adds its table of arms; a search run adds accuracy against tokens. Figures are inline SVG and the
page carries its own style: one file that opens anywhere, offline.
"""

from __future__ import annotations

import collections
import html
import io
import json
import math
import statistics
from pathlib import Path
from typing import Any, Sequence

from selfimprove.eval.report import read_jsonl

__all__ = ["find_runs", "write_html_report"]

EPISODES = 12  # sample episodes shown per run and kind
STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.6em; } h2 { margin-top: 2em; border-bottom: 1px solid #ddd; } h3 { margin-top: 1.4em; }
table { border-collapse: collapse; margin: .6em 0; } th, td { border: 1px solid #ddd; padding: .25em .6em; }
th { background: #f4f4f4; text-align: left; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.text { font-family: ui-monospace, monospace; white-space: pre-wrap; max-width: 32em; }
.right { color: #17692d; } .wrong { color: #a2231d; } figure { margin: 1em 0; } figure svg { max-width: 100%; height: auto; }
details { margin: .5em 0; } summary { cursor: pointer; font-weight: 600; } .muted { color: #777; }
"""


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def find_runs(root: Path) -> list[Path]:
    """Training runs at or under `root` (folders with metrics.jsonl), in path order."""
    if (root / "metrics.jsonl").is_file():
        return [root]
    return sorted(p.parent for p in root.rglob("metrics.jsonl") if "checkpoints" not in p.parts)


def _label(run: Path, roots: Sequence[Path]) -> str:
    for root in roots:
        if run == root:
            return root.name or str(root)
        if run.is_relative_to(root):
            return f"{root.name}/{run.relative_to(root)}"
    return str(run)


# --------------------------------------------------------------------------------------- figures
def _svg(fig: Any) -> str:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg")
    plt.close(fig)
    text = buffer.getvalue()
    return text[text.index("<svg"):]  # inline: no XML prolog or doctype


def _figure(title: str, ylabel: str, lines: Sequence[tuple[str, Sequence[tuple[float, float]]]], *,
            logx: bool = False, band: Sequence[tuple[str, Sequence[tuple[float, float, float]]]] = ()) -> str | None:
    """One figure of lines (label, points), optionally with shaded bands (label, (x, low, high)); None when empty."""
    if not any(points for _, points in lines):
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 3.6))
    for label, points in band:
        if points:
            xs, lows, highs = zip(*points)
            ax.fill_between(xs, lows, highs, alpha=0.18, label=label)
    for label, points in lines:
        if points:
            ax.plot(*zip(*points), marker="o" if len(points) < 40 else None, markersize=3, label=label)
    if logx:
        ax.set_xscale("log")
    ax.set_title(title, fontsize=11)
    ax.set_xlabel("tokens per problem" if logx else "step")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    return _svg(fig)


def _series(rows: Sequence[dict[str, Any]], key: str) -> list[tuple[float, float]]:
    return [(r["step"], value) for r in rows if (value := _finite(r.get(key))) is not None and isinstance(r.get("step"), int)]


def _finite(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) else None


def _scan_rollouts(path: Path, last: int) -> tuple[dict[int, list[float]], list[dict[str, Any]]]:
    """One pass over a (possibly large) rollouts file: the rewards per step, and the last `last` episodes;
    only one line is held at a time besides those."""
    by_step: dict[int, list[float]] = {}
    tail: collections.deque[dict[str, Any]] = collections.deque(maxlen=last)
    if not path.is_file():
        return by_step, []
    with path.open(errors="replace") as f:
        for line in f:
            try:
                row = json.loads(line)
            except ValueError:
                continue  # a torn line
            if not isinstance(row, dict):
                continue
            tail.append(row)
            reward = _finite(row.get("reward"))
            if reward is not None and isinstance(row.get("step"), int):
                by_step.setdefault(row["step"], []).append(reward)
    return by_step, list(tail)


def _reward_band(by_step: dict[int, list[float]]) -> tuple[list[tuple[float, float]], list[tuple[float, float, float]]]:
    """Per step: the median reward and its 10-90% band."""
    median, band = [], []
    for step in sorted(by_step):
        values = sorted(by_step[step])
        median.append((step + 1, statistics.median(values)))
        q = statistics.quantiles(values, n=10, method="inclusive") if len(values) > 1 else [values[0]] * 9
        band.append((step + 1, q[0], q[-1]))
    return median, band


# --------------------------------------------------------------------------------------- html
def _table(header: Sequence[str], rows: Sequence[Sequence[Any]], numeric_from: int = 1) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = []
    for row in rows:
        cells = []
        for i, value in enumerate(row):
            css = "num" if i >= numeric_from else ""
            cells.append(f'<td class="{css}">{value}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _pct(value: Any) -> str:
    return f"{100 * v:.1f}%" if (v := _finite(value)) is not None else "-"


def _verdict(correct: Any) -> str:
    return '<span class="right">right</span>' if correct else '<span class="wrong">wrong</span>'


def _episodes(title: str, rows: Sequence[dict[str, Any]], text_key: str, extra: str) -> str:
    if not rows:
        return ""
    shown = [[html.escape(str(r.get("step", r.get("mode", "")))), f'<td class="text">{html.escape(str(r.get("prompt", "")))}</td>',
              f'<td class="text">{html.escape(str(r.get(text_key, "")))}</td>',
              f"{score:.3g}" if (score := _finite(r.get("reward", r.get("score")))) is not None else "-", _verdict(r.get("correct")),
              html.escape(str(r.get(extra, "")))] for r in rows]
    body = "".join("<tr><td>{}</td>{}{}<td class=\"num\">{}</td><td>{}</td><td>{}</td></tr>".format(*row) for row in shown)
    head = "".join(f"<th>{h}</th>" for h in ("step", "prompt", "completion", "reward", "verdict", extra))
    return (f'<details open><summary>{html.escape(title)} ({len(rows)} shown)</summary>'
            f'<table class="episodes"><tr>{head}</tr>{body}</table></details>')


def _run_section(run: Path, label: str) -> str:
    summary = _read_json(run / "summary.json")
    rows = read_jsonl(run / "metrics.jsonl")
    parts = [f'<section class="run"><h3>{html.escape(label)}</h3>']
    facts = [("method", summary.get("method")), ("steps", summary.get("steps")), ("held-out accuracy", _pct(summary.get("accuracy"))),
             ("sampled tokens", f"{summary['sampled_tokens']:,}" if isinstance(summary.get("sampled_tokens"), int) else None),
             ("reward failures", summary.get("reward_failures")), ("train seconds", summary.get("train_seconds"))]
    parts.append("<p>" + " · ".join(f"{k}: <b>{html.escape(str(v))}</b>" for k, v in facts if v not in (None, "-")) + "</p>")
    by_step, last = _scan_rollouts(run / "buffers" / "rollouts.jsonl", EPISODES)
    median, band = _reward_band(by_step)
    figure = _figure("rewards trained on, per step (median, 10-90% band)", "reward", [("median", median)],
                     band=[("10-90%", band)])
    if figure:
        parts.append(f'<figure class="rewards">{figure}</figure>')
    parts.append(_episodes("last trained episodes", last, "completion", "problem_id"))
    evals = [r for r in read_jsonl(run / "eval_samples.jsonl") if r.get("mode", "greedy") == "greedy"]
    parts.append(_episodes("final evaluation (greedy)", evals[:EPISODES], "text", "reason"))
    if not rows:
        parts.append('<p class="muted">no metrics logged yet</p>')
    parts.append("</section>")
    return "".join(parts)


def _curves(runs: Sequence[tuple[str, Path]]) -> list[str]:
    metrics = {label: read_jsonl(run / "metrics.jsonl") for label, run in runs}
    figures = []
    for title, key, ylabel in (("held-out greedy accuracy", "eval/accuracy", "accuracy"),
                               ("train reward (sampled)", "train/reward", "reward"), ("loss", "train/loss", "loss")):
        lines = []
        for label, rows in metrics.items():
            points = _series(rows, key)
            if key == "eval/accuracy":
                points += _series(rows, "final/accuracy")
            lines.append((label, sorted(points)))
        figure = _figure(title, ylabel, lines)
        if figure:
            figures.append(f'<figure class="curve">{figure}</figure>')
    return figures


def _comparison(root: Path, summary: dict[str, Any]) -> str:
    labels = summary.get("labels", {})
    header = ["arm", "Acc@t1", "Acc@t2", "Δ", "Δ i→c", "Δ c→i", "sampled tokens"]
    rows = [[html.escape(str(labels.get(m, m))), *(_pct(r.get(k)) for k in ("acc_t1", "acc_t2", "delta", "delta_i_to_c", "delta_c_to_i")),
             f"{int(t):,}" if (t := _finite(r.get("sampled_tokens"))) is not None else "-"] for m, r in summary.get("methods", {}).items()
            if isinstance(r, dict)]
    return f"<h2>Comparison: {html.escape(root.name)}</h2>" + _table(header, rows)


def _search(root: Path, summary: dict[str, Any]) -> str:
    points = summary.get("points", [])
    points = [p for p in points if isinstance(p, dict)]
    line = [(t, a) for p in points if (t := _finite(p.get("mean_tokens"))) and (a := _finite(p.get("accuracy"))) is not None]
    figure = _figure(f"{summary.get('search', 'search')}: accuracy against tokens", "accuracy", [(root.name, sorted(line))], logx=True)
    rows = [[html.escape(", ".join(f"{k}={v}" for k, v in (p.get("setting") or {}).items()) or "-"), _pct(p.get("accuracy")),
             f"{t:.1f}" if (t := _finite(p.get("mean_tokens"))) is not None else "-"] for p in points]
    return (f"<h2>Search: {html.escape(root.name)}</h2>" + (f"<figure>{figure}</figure>" if figure else "")
            + _table(["setting", "accuracy", "tokens/problem"], rows))


def write_html_report(roots: Sequence[str | Path], out: str | Path) -> Path:
    """Write the page (see the module docstring) to `out`; returns its path. A folder that holds no run
    is a `ValueError` naming it."""
    roots = [Path(r) for r in roots]
    sections: list[str] = []
    training: list[tuple[str, Path]] = []
    for root in roots:
        summary = _read_json(root / "summary.json")
        if "methods" in summary:
            sections.append(_comparison(root, summary))
        if summary.get("points"):
            sections.append(_search(root, summary))
        runs = find_runs(root)
        if not runs and not summary:
            raise ValueError(f"{root} holds no run (no metrics.jsonl or summary.json under it)")
        training += [(_label(run, roots), run) for run in runs]
    if training:
        overview = [[html.escape(label), html.escape(str(_read_json(run / "summary.json").get("method", "-"))),
                     _pct(_read_json(run / "summary.json").get("accuracy")),
                     str(max((r.get("step", 0) for r in read_jsonl(run / "metrics.jsonl")), default=0))] for label, run in training]
        sections.insert(0, "<h2>Runs</h2>" + _table(["run", "method", "held-out accuracy", "steps"], overview, numeric_from=2))
        sections.append("<h2>Learning curves</h2>" + "".join(_curves(training)))
        sections.append("<h2>Each run</h2>" + "".join(_run_section(run, label) for label, run in training))
    title = "selfimprove report: " + ", ".join(r.name or str(r) for r in roots)
    page = (f"<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>{''.join(sections)}</body></html>\n")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page)
    return out
