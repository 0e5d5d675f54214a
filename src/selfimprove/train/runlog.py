"""A run directory's record: the resolved config, metrics.jsonl and TensorBoard events.

On resume, metric lines after the resumed step are dropped so the log reads as one clean run, and a
torn last line (a kill in the middle of a write) is dropped too. `time` continues from the resumed
step's value (`elapsed`), so wall-time columns read as one run across restarts.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from selfimprove.config import dump_yaml
from selfimprove.eval.report import read_jsonl

logger = logging.getLogger(__name__)


def _parse(line: str) -> dict[str, Any] | None:
    try:
        row = json.loads(line)
    except ValueError:
        return None
    return row if isinstance(row, dict) else None


class RunLog:
    def __init__(self, run_dir: str | Path, config: BaseModel | None = None, *, resume_step: int | None = None,
                 elapsed: float = 0.0) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.dir = Path(run_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        if config is not None:
            (self.dir / "config.yaml").write_text(dump_yaml(config))
        self.metrics_path = self.dir / "metrics.jsonl"
        if resume_step is None:
            self.metrics_path.write_text("")
        elif self.metrics_path.exists():
            kept = []
            for number, line in enumerate(self.metrics_path.read_text(errors="replace").splitlines(), start=1):
                row = _parse(line) if line.strip() else None
                if row is None:
                    if line.strip():
                        logger.warning("%s: dropped unreadable line %d (a torn write)", self.metrics_path, number)
                    continue
                if row.get("step", 0) <= resume_step:
                    kept.append(line)
            self.metrics_path.write_text("".join(line + "\n" for line in kept))
        purge = None if resume_step is None else resume_step + 1
        self.writer = SummaryWriter(str(self.dir / "tb"), purge_step=purge)
        self.started = time.time() - elapsed

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        row = {"step": step, "time": round(time.time() - self.started, 3), **metrics}
        with self.metrics_path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        for key, value in metrics.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                self.writer.add_scalar(key, value, step)
        self.writer.flush()

    def forget(self, prefix: str) -> None:
        """Drop the logged rows that hold a metric starting with `prefix` (a final evaluation redone)."""
        kept = [row for row in read_jsonl(self.metrics_path) if not any(k.startswith(prefix) for k in row)]
        self.metrics_path.write_text("".join(json.dumps(row) + "\n" for row in kept))

    def close(self) -> None:
        self.writer.close()


class NullLog:
    """What a data-parallel rank other than 0 logs: nothing (rank 0 writes the run's record)."""

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        pass

    def forget(self, prefix: str) -> None:
        pass

    def close(self) -> None:
        pass


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    return read_jsonl(path)  # a torn line (a killed write) is skipped
