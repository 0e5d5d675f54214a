"""A run directory's record: the resolved config, metrics.jsonl and TensorBoard events.

On resume, metric lines after the resumed step are dropped so the log reads as one clean run.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from selfimprove.config import dump_yaml


class RunLog:
    def __init__(self, run_dir: str | Path, config: BaseModel | None = None, *, resume_step: int | None = None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.dir = Path(run_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        if config is not None:
            (self.dir / "config.yaml").write_text(dump_yaml(config))
        self.metrics_path = self.dir / "metrics.jsonl"
        if resume_step is None:
            self.metrics_path.write_text("")
        elif self.metrics_path.exists():
            kept = [line for line in self.metrics_path.read_text().splitlines() if line and json.loads(line).get("step", 0) <= resume_step]
            self.metrics_path.write_text("".join(line + "\n" for line in kept))
        purge = None if resume_step is None else resume_step + 1
        self.writer = SummaryWriter(str(self.dir / "tb"), purge_step=purge)
        self.started = time.time()

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        row = {"step": step, "time": round(time.time() - self.started, 3), **metrics}
        with self.metrics_path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        for key, value in metrics.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                self.writer.add_scalar(key, value, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
