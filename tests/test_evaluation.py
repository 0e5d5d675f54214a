"""Evaluation as users expect it: greedy accuracy with strict and lenient answer extraction side by
side, unbiased pass@k, maj@k and avg@n from samples (checked by hand on scripted answers), every
completion saved and exportable, the final evaluation on the progress bar, and a finished run that a
rerun leaves as it is."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from selfimprove.eval.evaluate import evaluate
from selfimprove.policy.base import Completion
from selfimprove.tasks import make_task

ROOT = Path(__file__).resolve().parent.parent
ROWS = [{"q": f"{a} plus {b}", "a": a + b} for a in range(1, 13) for b in range(1, 13)]


class Scripted:
    """A sampler answering from a script: greedy gets `greedy[prompt]`, sample j gets `samples[prompt][j]`."""

    eos_ids: list[int] = []

    def __init__(self, greedy: dict[str, str], samples: dict[str, list[str]]) -> None:
        self.greedy, self.samples = greedy, samples

    def generate(self, prompts, params, *, generator=None):  # type: ignore[no-untyped-def]
        out = []
        for i, p in enumerate(prompts):
            texts = [self.greedy[p]] if params.temperature == 0 else self.samples[p][: params.n]
            out += [Completion(i, [1], [2] * len(t), t, [0.0] * len(t), "eos") for t in texts]
        return out


@pytest.fixture
def task(tmp_path: Path) -> Any:
    path = tmp_path / "sums.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    return make_task("dataset", {"path": str(path), "prompt_field": "q", "answer_field": "a", "test_fraction": 0.2})


def test_strict_and_lenient_extraction_pass_maj_and_avg_by_hand(task: Any) -> None:
    a, b, c = task.problems("test", 3)
    gold = {p.prompt: p.answer for p in (a, b, c)}
    greedy = {a.prompt: f"#### {gold[a.prompt]}",  # marked: right under both
              b.prompt: f"so the answer is {gold[b.prompt]}",  # right only leniently
              c.prompt: "#### 0"}  # wrong
    right, wrong = (lambda p: f"#### {gold[p.prompt]}"), (lambda p: "#### 1000")
    samples = {a.prompt: [wrong(a), right(a), right(a), right(a)],  # maj@1 wrong, maj@3 right
               b.prompt: [right(b), wrong(b), wrong(b), wrong(b)],  # maj@1 right, maj@3 wrong (1000 twice)
               c.prompt: [wrong(c)] * 4}
    result = evaluate(Scripted(greedy, samples), task, [a, b, c], samples=4, pass_k=[1, 2], maj_k=[1, 3], temperature=0.7)
    assert result.accuracy == pytest.approx(2 / 3) and result.strict_accuracy == pytest.approx(1 / 3)
    assert result.pass_at_k[1] == pytest.approx((3 / 4 + 1 / 4 + 0) / 3)
    assert result.pass_at_k[2] == pytest.approx((1 + (1 - 3 / 6) + 0) / 3)  # 1 - C(n-c, 2)/C(4, 2)
    assert result.maj_at_k == {1: pytest.approx(1 / 3), 3: pytest.approx(1 / 3)}
    assert result.avg_at_n == pytest.approx(4 / 12)
    metrics = result.metrics()
    assert metrics["eval/accuracy_strict"] == pytest.approx(1 / 3) and metrics["eval/accuracy_lenient"] == pytest.approx(2 / 3)
    assert set(metrics) >= {"eval/pass@1", "eval/pass@2", "eval/maj@1", "eval/maj@3", "eval/avg@4"}
    assert result.sampling == {"samples": 4, "temperature": 0.7, "top_p": 1.0, "max_new_tokens": 32, "seed": 0}
    assert len(result.records) == 3 and len(result.sample_records) == 12
    assert [r["sample"] for r in result.sample_records[:4]] == [0, 1, 2, 3]


def test_maj_at_k_votes_by_the_tasks_answer_key_and_invalid_answers_vote_together(task: Any) -> None:
    """Two spellings of one answer are one vote; answers with no answer at all form an "invalid" bucket
    that can win (and is then wrong), as lm-eval counts them."""
    a, b = task.problems("test", 2)
    samples = {a.prompt: ["#### 1000", f"#### {a.answer}", f"so the answer is {float(a.answer)}"],  # 1000 once, the gold twice
               b.prompt: ["", " ", f"#### {b.answer}"]}  # two empty answers outvote the right one
    result = evaluate(Scripted({a.prompt: "", b.prompt: ""}, samples), task, [a, b], samples=3, pass_k=[3], maj_k=[1, 3])
    assert result.maj_at_k[3] == 0.5 and result.maj_at_k[1] == 0.0 and result.pass_at_k[3] == 1.0


def test_the_eval_command_saves_every_completion_and_export_reads_them(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from datasets import load_from_disk

    from selfimprove.cli import main

    run = tmp_path / "eval"
    code = main(["eval", str(ROOT / "recipes" / "countdown-eval.yaml"), "--set", "model.path=tiny:small", "--set",
                 f"run_dir={run}", "--set", "eval.num_problems=3", "--set", "eval.samples=4", "--set", "eval.pass_k=[1, 4]",
                 "--set", "eval.max_new_tokens=4"])
    out = capsys.readouterr().out
    assert code == 0
    report = json.loads((run / "eval.json").read_text())
    assert {"eval/accuracy", "eval/pass@4", "eval/maj@4", "eval/avg@4"} <= set(report)
    assert report["sampling"]["samples"] == 4 and "maj@4" in out and "avg@4" in out
    rows = [json.loads(line) for line in (run / "eval_samples.jsonl").read_text().splitlines()]
    assert [r["mode"] for r in rows].count("sampled") == 12 and [r["mode"] for r in rows].count("greedy") == 3
    assert main(["export", str(run), "--to", str(tmp_path / "out")]) == 0
    exported = load_from_disk(str(tmp_path / "out" / "eval_samples"))
    assert len(exported) == 15 and {"prompt", "completion", "reward", "gold", "mode"} <= set(exported.column_names)
    assert main(["export", str(tmp_path / "out" / "eval_samples"), "--to", str(tmp_path / "none")]) == 2  # nothing there


def _rl_args(run: Path) -> list[str]:
    return [str(ROOT / "recipes" / "countdown-grpo.yaml"), "--set", "model.path=tiny:small", "--set", f"run_dir={run}",
            "--set", "steps=2", "--set", "prompts_per_step=2", "--set", "sampling.n=2", "--set", "sampling.max_new_tokens=4",
            "--set", "eval.num_problems=3", "--set", "eval.max_new_tokens=4", "--set", "schedule.checkpoint_every=1"]


def test_a_finished_run_rerun_says_so_and_changes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from selfimprove.cli import main

    run = tmp_path / "run"
    assert main(["train", *_rl_args(run)]) == 0
    metrics = (run / "metrics.jsonl").read_text()
    summary = (run / "summary.json").read_text()
    capsys.readouterr()
    assert main(["train", *_rl_args(run)]) == 0
    err = capsys.readouterr().err
    assert "already finished at step 2 of 2: nothing to do" in err
    assert (run / "metrics.jsonl").read_text() == metrics and (run / "summary.json").read_text() == summary
    assert main(["train", *_rl_args(run), "--set", "steps=3"]) == 0  # a longer schedule goes on, and says where from
    assert "resuming from step 2 of 3" in capsys.readouterr().err
    assert [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()][-2:] == [3, 3]


def test_a_finished_run_with_other_eval_settings_is_evaluated_again_replacing_the_last(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from selfimprove.cli import main

    run = tmp_path / "run"
    assert main(["train", *_rl_args(run)]) == 0
    assert main(["train", *_rl_args(run), "--set", "eval.samples=2", "--set", "eval.pass_k=[1, 2]"]) == 0
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    finals = [r for r in rows if any(k.startswith("final/") for k in r)]
    assert len(finals) == 1 and "final/pass@2" in finals[0] and "final/avg@2" in finals[0]  # replaced, not appended
    summary = json.loads((run / "summary.json").read_text())
    assert summary["eval"]["final/maj@2"] == finals[0]["final/maj@2"] and summary["eval_sampling"]["samples"] == 2


def test_the_final_evaluation_is_counted_on_the_progress_bar(tmp_path: Path) -> None:
    from selfimprove.config import RLRecipe, load_recipe
    from selfimprove.methods.rl import run_rl

    seen: list[tuple[str, int, int]] = []

    def on_step(step: int, metrics: dict[str, Any]) -> None:
        pass

    on_step.stage = lambda name, done, of: seen.append((name, done, of))  # type: ignore[attr-defined]
    recipe = load_recipe(RLRecipe, ROOT / "recipes" / "countdown-grpo.yaml", _rl_args(tmp_path / "run")[1:][1::2])
    run_rl(recipe.model_copy(update={"eval": recipe.eval.model_copy(update={"batch_size": 2})}), on_step)
    assert seen == [("final eval", 0, 3), ("final eval", 2, 3), ("final eval", 3, 3)]
