"""`selfimprove export RUN_DIR --to DIR`: what a run made, as Hugging Face datasets in TRL's columns.

Found anywhere under RUN_DIR (a method made of several runs, such as AlphaLLM's rounds, included):
- `buffers/rollouts.jsonl` (every trained episode of an RL run) -> `prompt`, `completion`, `reward`
  (+ `correct`, `step`, `problem_id`, `group`): TRL's prompt-completion format with a reward column;
  a conversation with an environment also has `messages` (chat messages with `tool_calls` and `tool`
  results) and `tools` (their JSON schemas): TRL's conversational format, which its SFT trainer reads;
- `buffers/preference_pairs.jsonl` (online DPO) and AlphaLLM's `pairs.jsonl` (sibling steps of search
  trees) -> `prompt`, `chosen`, `rejected`: TRL's preference format (DPOTrainer reads it as is);
- AlphaLLM's `kept.jsonl` (the paths a search kept) -> `prompt`, `completion`: TRL's SFT format;
- `results.jsonl` of `selfimprove search` -> `prompt`, `completion` (the search's answer), `reward`
  (1 if correct) and the tokens it cost;
- `eval_samples.jsonl` of `selfimprove eval` or a training run's final evaluation -> `prompt`,
  `completion`, `reward` (the verifier's score), `correct`, `gold`, `mode` (greedy or sampled) and the
  sample's index.

Each becomes `DIR/<path>` written by `Dataset.save_to_disk` (read back with `datasets.load_from_disk`;
object columns such as `messages` are `datasets.Json`, so every message reads back exactly as written),
with `DIR/index.json` listing name, kind, source file and rows. Records saved without text (older
runs, STaR's and Pair-SFT's token-id traces) are skipped and reported.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from selfimprove.errors import RunDirError
from selfimprove.eval.report import read_jsonl

KINDS: dict[str, tuple[str, tuple[str, ...]]] = {
    # file name -> (kind, the columns it must have as text)
    "rollouts.jsonl": ("rollouts", ("prompt", "completion")),
    "preference_pairs.jsonl": ("preferences", ("prompt", "chosen", "rejected")),
    "pairs.jsonl": ("preferences", ("prompt", "chosen", "rejected")),
    "kept.jsonl": ("sft", ("prompt", "completion")),
    "results.jsonl": ("search", ("prompt", "answer")),
    "eval_samples.jsonl": ("eval", ("prompt", "text")),
}
DROP = ("prompt_ids", "completion_ids", "chosen_ids", "rejected_ids", "steps", "candidates", "stats")

__all__ = ["export_run"]


def _convert(kind: str, row: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in row.items() if k not in DROP}
    if kind == "search":
        out["completion"] = out.pop("answer")
        out["reward"] = 1.0 if out.get("correct") else 0.0
    if kind == "eval":
        out["completion"] = out.pop("text")
        out["gold"] = out.pop("answer", None)
        out["reward"] = float(out.pop("score", 1.0 if out.get("correct") else 0.0))  # the verifier's score
    return out


def export_run(run_dir: str | Path, out: str | Path) -> list[dict[str, Any]]:
    """Export every record file under `run_dir` (see the module docstring); returns the index."""
    from datasets import disable_progress_bars

    from selfimprove.tasks.files import dataset_from_records

    disable_progress_bars()
    root, target = Path(run_dir), Path(out)
    if not root.is_dir():
        raise RunDirError(f"{root} is not a run folder")
    if target.resolve().is_relative_to(root.resolve()):
        raise RunDirError(f"--to {target} is inside the run folder {root}: choose a folder outside it")
    index: list[dict[str, Any]] = []
    for path in sorted(root.rglob("*.jsonl")):
        if path.name not in KINDS:
            continue
        kind, needed = KINDS[path.name]
        rows = read_jsonl(path)
        relative = path.relative_to(root)
        name = "__".join(relative.with_suffix("").parts).replace("buffers__", "")
        entry: dict[str, Any] = {"name": name, "kind": kind, "source": str(relative), "rows": 0}
        if not rows:
            index.append({**entry, "skipped": "no records"})
            continue
        if any(not all(isinstance(r.get(c), str) for c in needed) for r in rows):
            index.append({**entry, "skipped": f"records lack text columns {list(needed)} (written by an older version?)"})
            continue
        converted = [_convert(kind, r) for r in rows]
        folder = target / name
        if folder.exists():
            shutil.rmtree(folder)
        dataset_from_records(converted).save_to_disk(str(folder))
        index.append({**entry, "rows": len(converted), "columns": sorted(converted[0]), "path": str(folder)})
    target.mkdir(parents=True, exist_ok=True)
    (target / "index.json").write_text(json.dumps(index, indent=2))
    return index
