"""Tables and plots of finished runs (written to files; the CLI decides what to print)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """The JSON objects of a JSONL file, one per line; a torn line (a write cut by a kill) is skipped and
    a missing file is empty."""
    import json

    path = Path(path)
    rows: list[dict[str, Any]] = []
    if not path.is_file():
        return rows
    for line in path.read_text(errors="replace").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def cell(v: Any) -> str:
        return f"{v:.3f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def learning_curve(stages: Sequence[tuple[str, Sequence[dict[str, Any]]]], out: str | Path) -> Path:
    """Held-out accuracy (and RL train reward) against steps, stage after stage, on one PNG.

    Each stage's accuracy line starts from the previous stage's last point: where it started from.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    offset = 0
    previous: list[tuple[int, float]] = []
    for name, rows in stages:
        evals = [(r["step"] + offset, r["eval/accuracy"]) for r in rows if "eval/accuracy" in r]
        finals = [(r["step"] + offset, r["final/accuracy"]) for r in rows if "final/accuracy" in r]
        points = previous[-1:] + sorted(evals + finals)
        if points:
            ax.plot(*zip(*points), marker="o", label=f"{name}: held-out greedy accuracy")
            previous = points
        rewards = [(r["step"] + offset, r["train/reward"]) for r in rows if "train/reward" in r]
        if rewards:
            xs, ys = zip(*rewards)
            window = max(1, len(ys) // 30)
            smooth = [sum(ys[max(0, i - window + 1) : i + 1]) / len(ys[max(0, i - window + 1) : i + 1]) for i in range(len(ys))]
            ax.plot(xs, smooth, alpha=0.6, label=f"{name}: train reward (sampled, smoothed)")
        last = max((r["step"] for r in rows), default=0)
        if offset:
            ax.axvline(offset, color="grey", linestyle=":")
        offset += last
    ax.set_xlabel("step (SFT steps, then RL steps)")
    ax.set_ylabel("accuracy / reward")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    return save_figure(fig, out)


def save_figure(fig: Any, out: str | Path) -> Path:
    """Lay out, write a PNG at 120 dpi and free a matplotlib figure."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    out = Path(out)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
