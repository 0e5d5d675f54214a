"""Committed reports name paths relative to the repository root, never one machine's absolute path: the
bench writers pass every path through `bench/common.py`'s `repo_relative`, and the committed files hold none."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from common import repo_relative, repo_relative_paths  # noqa: E402
from reproduce_claims import write_report  # noqa: E402

# an absolute path in text: a root folder machines keep checkouts and temporary files in, then a name
ABSOLUTE = re.compile(r"(?<![\w.~-])/(?:work|home|root|tmp|Users|mnt|var|private|scratch|opt|data)/[\w.~-][^\s`'\x22()<>|,;]*")
COMMITTED = [ROOT / "REPRODUCTION.md", *sorted((ROOT / "bench" / "results").glob("*.md")),
             *sorted((ROOT / "bench" / "results").glob("*.json"))]


def test_a_path_inside_the_repository_is_named_from_its_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert repo_relative(ROOT / "runs" / "reproduce" / "search" / "seed0") == "runs/reproduce/search/seed0"
    assert repo_relative(str(ROOT / "runs" / "reproduce")) == "runs/reproduce"
    assert repo_relative(f"{ROOT}/runs/x/../reproduce") == "runs/reproduce"
    assert repo_relative(ROOT) == "."
    outside = tmp_path / "elsewhere" / "run"  # nothing better than the absolute path
    assert repo_relative(outside) == str(outside) and repo_relative(str(outside)) == str(outside)
    assert repo_relative(f"{ROOT}-other/runs") == f"{ROOT}-other/runs"  # a sibling folder whose name starts alike
    monkeypatch.chdir(ROOT / "bench")
    assert repo_relative("results") == "bench/results"  # a relative path counts from the working directory
    monkeypatch.chdir(tmp_path)
    assert repo_relative("runs/x") == "runs/x"  # outside the repository: as given


def test_every_absolute_path_in_a_reports_data_is_made_relative(tmp_path: Path) -> None:
    data = {"run_dir": str(ROOT / "runs" / "a"), "model": {"path": ROOT / "runs" / "a" / "final"},
            "critics": [str(ROOT / "runs" / "a" / "critics" / "orm"), str(tmp_path / "orm")],
            "argv": ["--run-dir", str(ROOT / "runs" / "b"), f"--out={ROOT}/runs/c", "--gamma", "0.3"],
            "setup": "Countdown, step format", "seed": 0, "ratio": 0.5, "quick": True, "none": None, "task": "countdown"}
    assert repo_relative_paths(data) == {
        "run_dir": "runs/a", "model": {"path": "runs/a/final"}, "critics": ["runs/a/critics/orm", str(tmp_path / "orm")],
        "argv": ["--run-dir", "runs/b", "--out=runs/c", "--gamma", "0.3"],
        "setup": "Countdown, step format", "seed": 0, "ratio": 0.5, "quick": True, "none": None, "task": "countdown"}


def test_the_reproduction_report_names_its_runs_from_the_repository_root(tmp_path: Path) -> None:
    root = ROOT / "runs" / "reproduce"  # read only (globbed); the report goes to tmp_path
    write_report(root, tmp_path / "results", tmp_path / "REPRODUCTION.md", quick=False, studies=["demo"], log_dir=tmp_path)
    text = (tmp_path / "REPRODUCTION.md").read_text()
    assert "from the runs under `runs/reproduce` and the results under" in text and str(ROOT) not in text
    data = json.loads((tmp_path / "results" / "reproduction.json").read_text())
    assert data["root"] == "runs/reproduce"


def test_the_search_budget_results_name_run_and_critic_folders_from_the_repository_root(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    search_budget = pytest.importorskip("search_budget")
    run = ROOT / "runs" / "reproduce" / "search" / "seed0"
    orm, value = str(run / "critics" / "orm"), str(tmp_path / "critics" / "value")  # one inside, one outside
    runs = []
    for label, name, critics, points in [
            ("majority_vote", "vote", {}, [({"n": 64}, 0.30, 300.0)]),
            ("best_of_n-orm", "best_of_n", {"orm": orm}, [({"n": 64}, 0.35, 320.0)]),
            ("eta-mcts", "eta_mcts", {"members": {"value": value}, "outcome": orm}, [({"simulations": 1}, 0.2, 50.0),
                                                                                  ({"simulations": 4}, 0.4, 200.0)])]:
        folder = tmp_path / "search" / label
        folder.mkdir(parents=True)
        (folder / "summary.json").write_text(json.dumps({"search": name, "critics": critics, "points": [
            {"setting": s, "accuracy": acc, "mean_tokens": tokens, "mean_policy_calls": 1.0, "mean_critic_calls": 1.0,
             "seconds": 1.0, "problems": 10} for s, acc, tokens in points]}))
        runs.append((label, folder))
    monkeypatch.setattr(search_budget, "RESULTS", tmp_path / "results")
    stamp = {"setup": "made up", "args": {"run_dir": str(run), "seed": "0"}}
    search_budget.report(argparse.Namespace(out="sb"), runs, stamp)
    text = (tmp_path / "results" / "sb.json").read_text()
    assert str(ROOT) not in text
    data = json.loads(text)
    assert data["args"]["run_dir"] == "runs/reproduce/search/seed0"
    eta = next(p for p in data["points"] if p["search"] == "eta-mcts")
    assert eta["critics"] == {"members": {"value": value}, "outcome": "runs/reproduce/search/seed0/critics/orm"}


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for k, v in value.items():
            yield k
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)
    elif isinstance(value, str):
        yield value


@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: str(p.relative_to(ROOT)))
def test_committed_reports_name_no_absolute_path(path: Path) -> None:
    text = path.read_text()
    assert str(ROOT) not in text
    found = ABSOLUTE.findall(text)
    assert not found, f"{path.relative_to(ROOT)} names absolute paths: {found[:3]}"
    if path.suffix == ".json":
        absolute = [s for s in _strings(json.loads(text)) if os.path.isabs(s)]
        assert not absolute, f"{path.relative_to(ROOT)} names absolute paths: {absolute[:3]}"


def test_the_committed_reports_are_found() -> None:
    names = {p.name for p in COMMITTED}
    assert {"REPRODUCTION.md", "reproduction.json", "search_budget.json"} <= names
