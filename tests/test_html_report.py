"""`selfimprove report`: one self-contained HTML page of training runs (learning curves, rewards per
step, episodes with their verdicts), rendered in headless Chromium (Debian's package: `.ci/run`
installs it) to check that the page shows its figures and episodes."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from selfimprove.config import RLRecipe
from selfimprove.methods.rl import run_rl

TASK = {"name": "countdown", "params": {"num_numbers": 2, "max_number": 9, "min_target": 1, "max_target": 18}}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("runs")
    out = []
    for name, lr in (("grpo-a", 1e-3), ("grpo-b", 1e-2)):
        recipe = RLRecipe.model_validate({
            "run_dir": str(root / name), "model": {"path": "tiny:small"}, "task": TASK, "steps": 3, "prompts_per_step": 2,
            "sampling": {"n": 3, "max_new_tokens": 5}, "optim": {"lr": lr}, "eval": {"num_problems": 4, "max_new_tokens": 5},
            "schedule": {"eval_every": 1, "eval_problems": 4}})
        run_rl(recipe)
        out.append(root / name)
    return out


def test_the_page_holds_curves_reward_bands_and_episodes_and_nothing_external(runs: list[Path], tmp_path: Path) -> None:
    from selfimprove.cli import main

    assert main(["report", *map(str, runs), "--out", str(tmp_path / "report")]) == 0
    page = (tmp_path / "report" / "report.html").read_text()
    assert page.count("<svg") == 3 + 2  # accuracy, reward and loss curves; one reward band per run
    assert page.count('class="run"') == 2 and "grpo-a" in page and "grpo-b" in page
    assert page.count("<summary>last trained episodes") == 2 and page.count("<summary>final evaluation (greedy)") == 2
    assert not re.search(r"(src|href)=\"(https?:)?//", page)  # self-contained: no fetched resources


def test_a_folder_without_a_run_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from selfimprove.cli import main

    assert main(["report", str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    assert "holds no run" in capsys.readouterr().err


def test_odd_inputs_do_not_break_the_page(tmp_path: Path) -> None:
    """NaN and missing values, torn lines, a comparison summary with holes, a search summary with None."""
    from selfimprove.eval.html_report import write_html_report

    run = tmp_path / "run"
    (run / "buffers").mkdir(parents=True)
    (run / "metrics.jsonl").write_text('{"step": 1, "train/reward": NaN, "train/loss": 0.5}\n{"step": 2, "train/re')
    (run / "buffers" / "rollouts.jsonl").write_text('{"step": 0, "reward": NaN}\n{"step": 0, "reward": 1.0, "correct": true}\n')
    (tmp_path / "cmp").mkdir()
    (tmp_path / "cmp" / "summary.json").write_text(json.dumps({"methods": {"a": {"acc_t1": None, "sampled_tokens": None}}}))
    (tmp_path / "search").mkdir()
    (tmp_path / "search" / "summary.json").write_text(json.dumps({"points": [{"setting": None, "accuracy": None, "mean_tokens": None}]}))
    page = write_html_report([run, tmp_path / "cmp", tmp_path / "search"], tmp_path / "report.html").read_text()
    assert "<h2>Comparison: cmp</h2>" in page and "<h2>Search: search</h2>" in page and 'class="right">right</span>' in page


@pytest.mark.skipif(shutil.which("chromium") is None and not os.environ.get("SELFIMPROVE_REQUIRE_CHROMIUM"),
                    reason="Debian's chromium is not installed (.ci/run installs it and requires this test)")
def test_headless_chromium_renders_the_figures_and_episodes(runs: list[Path], tmp_path: Path) -> None:
    from PIL import Image

    from selfimprove.eval.html_report import write_html_report

    page = write_html_report(runs, tmp_path / "report.html")
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run(["chromium", *flags, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    rendered = dom.stdout
    assert rendered.count("<svg") == 5 and rendered.count("<path") > 20  # the figures' lines and bands
    rows = re.findall(r'<table class="episodes">(.*?)</table>', rendered, re.S)
    assert len(rows) == 4 and all(r.count("<tr>") > 1 for r in rows)  # episodes with their verdicts
    assert 'class="right">right</span>' in rendered or 'class="wrong">wrong</span>' in rendered
    shot = tmp_path / "page.png"
    subprocess.run(["chromium", *flags, f"--screenshot={shot}", "--window-size=1200,2400", page.as_uri()],
                   capture_output=True, timeout=120, check=True)
    image = Image.open(shot).convert("L")
    assert image.size == (1200, 2400)
    curve = image.crop((100, 350, 900, 650))  # where the first figure is drawn: its axes, ticks and lines
    assert len(set(curve.getdata())) > 20 and curve.getextrema()[0] < 100  # drawn, not blank
    summary = json.loads((runs[0] / "summary.json").read_text())
    assert f"{100 * summary['accuracy']:.1f}%" in rendered
