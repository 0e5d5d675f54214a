"""STaR for self-correction (SPECS §2): the i->c filter (and D+'s c->c), only attempt-2 tokens train,
the sampled-token budget splits over rounds, and a crashed run resumes to bit-identical weights."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import Crash, crash_at, sampling_job

from selfimprove.config import ConfigError, OptimConfig, load_recipe
from selfimprove.methods.star import TRACES, Star, StarRecipe, collect_round, keeps, run_star, select_traces
from selfimprove.methods.traces import CorrectionTrace, correction_episode
from selfimprove.policy import HFPolicy
from selfimprove.rollout.episode import Episode, Segment, collate, segment_mask
from selfimprove.tasks.base import TASKS, Problem, Split, Task, Verdict
from selfimprove.train.learner import Learner
from selfimprove.train.objectives import sft_objective
from selfimprove.train.runlog import read_metrics

RECIPES = Path(__file__).resolve().parent.parent / "recipes"


class EvenFirstChar(Task):
    """Toy task for an untrained model: right when the first character's code point is even (about half
    of a random model's answers), so every transition i->c, c->i, c->c, i->i occurs in a few samples."""

    name = "star-even-first-char"

    def problem(self, split: Split, index: int) -> Problem:
        return Problem(id=f"even-{split}-{index}", prompt=f"{index % 10}=", answer="an even character")

    def verify(self, problem: Problem, text: str) -> Verdict:
        return Verdict.right() if text[:1] and ord(text[0]) % 2 == 0 else Verdict.wrong("odd or empty")


if EvenFirstChar.name not in TASKS:
    TASKS.register(EvenFirstChar.name)(EvenFirstChar)


def two_attempt(problem: str, c1: bool, c2: bool, a1: list[int], a2: list[int]) -> Episode:
    return Episode(
        [Segment("prompt", [1, 2]), Segment("attempt1", a1, trainable=True), Segment("instruction", [9]),
         Segment("attempt2", a2, trainable=True)],
        group=0,
        problem_id=problem,
        info={"correct1": c1, "correct2": c2},
    )


def test_star_keeps_exactly_wrong_then_right_and_d_plus_adds_right_then_right() -> None:
    episodes = [
        two_attempt("i->c", False, True, [10], [11, 2]),
        two_attempt("c->i", True, False, [12], [13, 2]),
        two_attempt("c->c", True, True, [14], [15, 2]),
        two_attempt("i->i", False, False, [16], [17, 2]),
        two_attempt("i->c again", False, True, [18, 19], [20, 2]),
    ]
    kept = select_traces(episodes)
    assert [t["problem_id"] for t in kept] == ["i->c", "i->c again"]
    assert kept[0] == CorrectionTrace(problem_id="i->c", prompt=[1, 2], attempt1=[10], attempt2=[11, 2], correct1=False)
    assert [t["problem_id"] for t in select_traces(episodes, plus=True)] == ["i->c", "c->c", "i->c again"]
    assert [keeps(a, b) for a, b in [(False, True), (True, False), (True, True), (False, False)]] == [True, False, False, False]
    assert [keeps(a, b, plus=True) for a, b in [(False, True), (True, False), (True, True), (False, False)]] == [True, False, True, False]


def test_only_attempt_two_tokens_are_trained(small_policy: HFPolicy) -> None:
    instruction = small_policy.encode_completion("\nagain:", add_eos=False)
    eos = small_policy.eos_ids[0]
    traces = [
        CorrectionTrace(problem_id="a", prompt=small_policy.encode_prompt("3+4="), attempt1=small_policy.encode_completion("8", add_eos=False),
                        attempt2=small_policy.encode_completion("7"), correct1=False),
        CorrectionTrace(problem_id="b", prompt=small_policy.encode_prompt("12-5="), attempt1=small_policy.encode_completion("9 ", add_eos=False),
                        attempt2=small_policy.encode_completion("7 ok"), correct1=False),
    ]
    episodes = [correction_episode(t, instruction, group=i) for i, t in enumerate(traces)]
    assert [[s.kind for s in e.segments if s.trainable] for e in episodes] == [["attempt2"], ["attempt2"]]
    batch = collate(episodes, small_policy.pad_id)
    assert torch.equal(batch.mask, segment_mask(episodes, "attempt2", batch.mask.shape[1]))
    assert batch.mask.sum() == sum(len(t["attempt2"]) for t in traces)
    assert episodes[0].token_ids[-1] == eos  # the second attempt learns to end

    # The learner's SFT loss is the mean NLL of exactly the attempt-2 tokens, computed independently.
    model = small_policy.model
    with torch.no_grad():
        nll = []
        for t, e in zip(traces, episodes):
            ids = torch.tensor([e.token_ids])
            logp = torch.log_softmax(model(input_ids=ids).logits[0].float(), -1)
            start = len(e.token_ids) - len(t["attempt2"])
            nll += [-logp[j - 1, ids[0, j]] for j in range(start, len(e.token_ids))]
        expected = torch.stack(nll).mean()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    stats = Learner(small_policy, OptimConfig(lr=1e-2), 1).step(batch, sft_objective)
    assert stats["loss"] == pytest.approx(float(expected), rel=1e-4)
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())


def star_recipe(run_dir: Path, **star: object) -> StarRecipe:
    return StarRecipe(
        run_dir=str(run_dir),
        model={"path": "tiny:small"},
        task={"name": EvenFirstChar.name},
        first_problem=100,
        prompts_per_call=2,
        batch_size=4,
        sampling={"n": 3, "temperature": 1.0, "max_new_tokens": 2},
        optim={"lr": 1e-3, "micro_batch_size": 16},
        schedule={"checkpoint_every": 2, "eval_every": 0},
        eval={"num_problems": 3, "batch_size": 3, "max_new_tokens": 2},
        star={"rounds": 2, "steps_per_round": 2, "problems_per_round": 4, **star},
    )


def test_the_token_budget_is_split_over_rounds_and_stops_sampling(small_policy: HFPolicy, tmp_path: Path) -> None:
    recipe = star_recipe(tmp_path, max_sampled_tokens=100)
    job = sampling_job(Star(recipe), small_policy, TASKS.get(EvenFirstChar.name)(), tmp_path / "a")
    one_call = recipe.prompts_per_call * recipe.sampling.n * 2 * recipe.sampling.max_new_tokens  # most tokens one call adds
    first = collect_round(job, recipe, 0)
    assert 50 <= first["train/sampled_tokens"] < 50 + one_call  # round 1 of 2: half the budget
    assert job.stream.state_dict()["position"] == 100 + first["train/sampled_problems"]
    second = collect_round(job, recipe, 1)
    total = first["train/sampled_tokens"] + second["train/sampled_tokens"]
    assert 100 <= total < 100 + one_call and job.state.collected_tokens == total
    assert job.state.kept_per_round == [first["train/kept_round"], second["train/kept_round"]]
    traces = job.buffer(TRACES).read()
    assert len(traces) == sum(job.state.kept_per_round)
    # the traces live in the run directory, not in the job state
    assert (tmp_path / "a" / "buffers" / "traces.jsonl").read_text().count("\n") == len(traces)
    # every kept trace is wrong then right under the task's own verifier
    task = job.task
    for t in traces:
        problem = Problem(id=t["problem_id"], prompt="", answer="")
        assert not task.verify(problem, small_policy.detokenize(t["attempt1"])).correct
        assert task.verify(problem, small_policy.detokenize(t["attempt2"])).correct
    for m in (first, second):
        assert m["train/delta"] == pytest.approx(m["train/i_to_c"] - m["train/c_to_i"])
        assert m["train/kept_round"] == round(m["train/i_to_c"] * m["train/sampled_traces"])

    no_budget = star_recipe(tmp_path, problems_per_round=5)
    job = sampling_job(Star(no_budget), small_policy, task, tmp_path / "b")
    assert collect_round(job, no_budget, 0)["train/sampled_problems"] == 5 and job.stream.state_dict()["position"] == 105


def test_a_budgeted_run_still_trains_every_round(tmp_path: Path) -> None:
    """The driver would end a run at the step that reaches *its* budget (`max_sampled_tokens` at the
    top); STaR's budget is its own, so the last round's SFT steps all run."""
    summary = run_star(star_recipe(tmp_path / "run", max_sampled_tokens=60))
    assert summary["steps"] == 4 and len(summary["kept_per_round"]) == 2
    assert 60 <= summary["sampled_tokens"] < 60 + 24


def test_run_star_logs_rounds_and_resumes_bit_identically(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    straight = run_star(star_recipe(tmp_path / "straight", plus=True))
    rows = [r for r in read_metrics(tmp_path / "straight" / "metrics.jsonl") if "train/round" in r]
    assert [r["train/round"] for r in rows] == [1, 1, 2, 2]
    assert ["train/sampled_tokens" in r for r in rows] == [True, False, True, False]
    assert all("train/c_to_c" in r and "train/i_to_c" in r for r in rows if "train/sampled_tokens" in r)
    assert straight["kept_per_round"] == [rows[0]["train/kept_round"], rows[2]["train/kept_round"]]
    assert straight["kept"] == rows[-1]["train/kept"] > 0 and "train/loss" in rows[-1]
    assert straight["sampled_tokens"] == rows[0]["train/sampled_tokens"] + rows[2]["train/sampled_tokens"]
    assert straight["steps"] == 4 and straight["problems_sampled"] == 8
    assert json.loads((tmp_path / "straight" / "summary.json").read_text())["kept_per_round"] == straight["kept_per_round"]

    with pytest.raises(Crash):  # crash after round 2 sampled (step 3), resume from the step-2 checkpoint
        run_star(star_recipe(tmp_path / "resumed", plus=True), on_step=crash_at(3))
    resumed = run_star(star_recipe(tmp_path / "resumed", plus=True))
    a = load_file(str(tmp_path / "straight" / "final" / "model.safetensors"))
    b = load_file(str(tmp_path / "resumed" / "final" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert (resumed["kept_per_round"], resumed["sampled_tokens"]) == (straight["kept_per_round"], straight["sampled_tokens"])


def test_star_recipe_derives_steps_and_rejects_what_does_not_apply() -> None:
    recipe = load_recipe(StarRecipe, RECIPES / "star-countdown.yaml", ["star.rounds=2", "star.steps_per_round=7"])
    assert recipe.steps == 14 and recipe.model.path == "runs/selfcorrect-countdown/base/final"
    with pytest.raises(ConfigError, match="star.rounds x star.steps_per_round"):
        load_recipe(StarRecipe, RECIPES / "star-countdown.yaml", ["steps=5"])
    with pytest.raises(ConfigError, match="num_problems"):
        load_recipe(StarRecipe, RECIPES / "star-countdown.yaml", ["num_problems=10"])
    with pytest.raises(ConfigError, match="star.plus"):
        load_recipe(StarRecipe, RECIPES / "star-countdown.yaml", ["star.plus=maybe"])
