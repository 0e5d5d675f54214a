"""Pair-SFT (SPECS §2): wrong attempts pair only with right attempts of the same problem, the budget
stops sampling, only y2 trains, and a crashed run resumes to bit-identical weights."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import Crash, crash_at, sampling_job
from test_star import EvenFirstChar

from selfimprove.config import ConfigError, load_recipe
from selfimprove.methods.pair_sft import PAIRS, PairSFT, PairSFTRecipe, collect_pairs, make_pairs, run_pair_sft
from selfimprove.policy import HFPolicy
from selfimprove.policy.base import Completion
from selfimprove.tasks.base import TASKS, Problem
from selfimprove.train.runlog import read_metrics

RECIPES = Path(__file__).resolve().parent.parent / "recipes"
EOS = 2


def attempt(problem: int, token: int) -> Completion:
    """A completion of problem `problem` whose body is the single token `token`, ended by EOS."""
    return Completion(prompt_index=problem, prompt_ids=[1, 100 + problem], token_ids=[token, EOS], text=str(token))


def test_pairs_wrong_with_right_attempts_of_the_same_problem_only() -> None:
    problems = [Problem(id=f"p{i}", prompt=f"q{i}", answer="") for i in range(4)]
    # p0: two wrong (10, 11), two right (20, 21); p1: only right; p2: only wrong; p3: one of each.
    # Interleaved, so a pairing by position instead of by problem would mix them up.
    rows = [(0, 10, False), (1, 30, True), (0, 20, True), (2, 40, False), (3, 50, False), (0, 11, False),
            (3, 60, True), (1, 31, True), (0, 21, True), (2, 41, False)]
    completions = [attempt(p, t) for p, t, _ in rows]
    correct = [c for _, _, c in rows]
    pairs = make_pairs(problems, completions, correct, [EOS], seed=0)
    assert [(t["problem_id"], t["attempt1"]) for t in pairs] == [("p0", [10]), ("p0", [11]), ("p3", [50])]
    for t in pairs:
        index = int(t["problem_id"][1:])
        assert t["prompt"] == [1, 100 + index]
        assert t["attempt2"][-1] == EOS and t["correct1"] is False  # y1 loses its end token, y2 keeps it
    assert {p["attempt2"][0] for p in pairs[:2]} <= {20, 21}  # p0's right attempts only
    assert pairs[2]["attempt2"] == [60, EOS]
    # random but reproducible: the seed picks among the right attempts
    assert make_pairs(problems, completions, correct, [EOS], seed=0) == pairs
    draws = {tuple(p["attempt2"][0] for p in make_pairs(problems, completions, correct, [EOS], seed=s)[:2]) for s in range(20)}
    assert len(draws) > 1
    with pytest.raises(ValueError):
        make_pairs(problems, completions, correct[:-1], [EOS], seed=0)


def pair_recipe(run_dir: Path, **pair_sft: object) -> PairSFTRecipe:
    return PairSFTRecipe(
        run_dir=str(run_dir),
        model={"path": "tiny:small"},
        task={"name": EvenFirstChar.name},
        first_problem=50,
        prompts_per_call=2,
        steps=3,
        batch_size=4,
        sampling={"n": 4, "temperature": 1.0, "max_new_tokens": 2},
        optim={"lr": 1e-3, "micro_batch_size": 16},
        schedule={"checkpoint_every": 2, "eval_every": 0},
        eval={"num_problems": 3, "batch_size": 3, "max_new_tokens": 2},
        pair_sft={"problems": 4, **pair_sft},
    )


def test_the_token_budget_stops_sampling_and_pairs_are_verified(small_policy: HFPolicy, tmp_path: Path) -> None:
    task = TASKS.get(EvenFirstChar.name)()
    recipe = pair_recipe(tmp_path, max_sampled_tokens=50)
    job = sampling_job(PairSFT(recipe), small_policy, task, tmp_path / "a")
    one_call = recipe.prompts_per_call * recipe.sampling.n * recipe.sampling.max_new_tokens
    m = collect_pairs(job, recipe)
    assert 50 <= m["train/sampled_tokens"] < 50 + one_call
    sampled = {f"even-train-{i}" for i in range(50, 50 + int(m["train/sampled_problems"]))}
    pairs = job.buffer(PAIRS).read()
    assert pairs and {t["problem_id"] for t in pairs} <= sampled
    assert len({t["problem_id"] for t in pairs}) == m["train/paired_problems"] == job.state.paired_problems
    for t in pairs:
        problem = Problem(id=t["problem_id"], prompt="", answer="")
        assert not task.verify(problem, small_policy.detokenize(t["attempt1"])).correct
        assert task.verify(problem, small_policy.detokenize(t["attempt2"])).correct
        assert t["prompt"] == small_policy.encode_prompt(f"{int(t['problem_id'].rsplit('-', 1)[1]) % 10}=")

    few = pair_recipe(tmp_path, problems=3)
    job = sampling_job(PairSFT(few), small_policy, task, tmp_path / "b")
    assert collect_pairs(job, few)["train/sampled_problems"] == 3


def test_run_pair_sft_reports_pairs_and_resumes_bit_identically(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    straight = run_pair_sft(pair_recipe(tmp_path / "straight"))
    rows = [r for r in read_metrics(tmp_path / "straight" / "metrics.jsonl") if "train/pairs" in r]
    assert ["train/sampled_tokens" in r for r in rows] == [True, False, False]
    assert straight["pairs"] == rows[0]["train/pairs"] > 0 and all("train/loss" in r for r in rows)
    assert straight["sampled_tokens"] == rows[0]["train/sampled_tokens"] and straight["problems_sampled"] == 4
    assert json.loads((tmp_path / "straight" / "summary.json").read_text())["pairs"] == straight["pairs"]

    with pytest.raises(Crash):  # crash at step 3, resume from the step-2 checkpoint
        run_pair_sft(pair_recipe(tmp_path / "resumed"), on_step=crash_at(3))
    resumed = run_pair_sft(pair_recipe(tmp_path / "resumed"))
    a = load_file(str(tmp_path / "straight" / "final" / "model.safetensors"))
    b = load_file(str(tmp_path / "resumed" / "final" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed["pairs"] == straight["pairs"]


def test_a_budgeted_run_runs_every_sft_step(tmp_path: Path) -> None:
    """The driver would end a run at the step that reaches *its* budget (`max_sampled_tokens` at the
    top); Pair-SFT's budget is its own, so every SFT step after collecting runs."""
    summary = run_pair_sft(pair_recipe(tmp_path / "run", max_sampled_tokens=40))
    assert summary["steps"] == 3 and 40 <= summary["sampled_tokens"] < 40 + 16


def test_pair_sft_recipe_loads_and_names_bad_fields() -> None:
    recipe = load_recipe(PairSFTRecipe, RECIPES / "pair-sft-countdown.yaml", ["pair_sft.max_sampled_tokens=1000"])
    assert recipe.pair_sft.max_sampled_tokens == 1000 and recipe.model.path == "runs/selfcorrect-countdown/base/final"
    with pytest.raises(ConfigError, match=r"^pair_sft\.budget: unknown field$"):
        load_recipe(PairSFTRecipe, RECIPES / "pair-sft-countdown.yaml", ["pair_sft.budget=5"])
