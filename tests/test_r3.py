"""R^3 (issue 12): start states of a demonstration, an untrained prefix, a continuation judged with its
prefix, the staged order, the mixed distribution, the adaptive rule, and exact resume mid-stage."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from helpers import Crash, crash_at

from selfimprove.algos.policy_losses import policy_loss
from selfimprove.methods.r3 import R3Recipe, run_r3
from selfimprove.policy.base import Completion, SamplingParams
from selfimprove.rollout.episode import collate, segment_mask
from selfimprove.rollout.start_states import StartState, prefix_text, start_state_episodes, start_states
from selfimprove.tasks import make_task
from selfimprove.tasks.base import Problem
from selfimprove.train.curriculum import Curriculum
from selfimprove.train.runlog import read_metrics

CHAIN = {"num_steps": 4, "max_number": 5}


def test_start_states_of_a_hand_written_demonstration() -> None:
    p = Problem("p", "3; +1 *2:\n", "8", ("3+1=4", "4*2=8"))
    states = start_states(p)
    assert [(s.k, s.left) for s in states] == [(0, 2), (1, 1)]  # always at least one step left
    assert prefix_text(p, 0) == "" and prefix_text(p, 1) == "3+1=4\n"
    with pytest.raises(ValueError, match="a step must be left"):
        prefix_text(p, 2)
    assert [s.k for s in start_states(Problem("q", "x", "y"))] == [0]  # no demonstration: the bare prompt


@dataclass
class Continue:
    """A stand-in engine that continues every context with a fixed text."""

    text: str

    def __post_init__(self) -> None:
        self.contexts: list[list[int]] = []

    def encode_prompt(self, text: str) -> list[int]:
        return [ord(c) for c in text]

    def encode_completion(self, text: str, *, add_eos: bool = True) -> list[int]:
        return [ord(c) for c in text] + ([0] if add_eos else [])

    def generate_ids(self, prompt_ids: Any, params: SamplingParams, *, generator: Any = None) -> list[Completion]:
        self.contexts += [list(p) for p in prompt_ids]
        ids = [ord(c) for c in self.text]
        return [Completion(i, list(p), ids, self.text, [-1.0] * len(ids), "eos") for i, p in enumerate(prompt_ids)
                for _ in range(params.n)]


def test_a_continuation_is_judged_together_with_its_prefix() -> None:
    task = make_task("chain", CHAIN)
    problem = task.problem("train", 0)
    last = problem.demonstration[-1]
    right = start_state_episodes(Continue(last), task, [StartState(problem, 3)], SamplingParams(n=2))  # type: ignore[arg-type]
    assert [e.info["correct"] for e in right] == [True, True] and right[0].info["left"] == 1
    row = right[0].record(step=4, detokenize=lambda ids: "".join(map(chr, ids)))
    assert row["start_k"] == 3 and row["prompt"] == problem.prompt + prefix_text(problem, 3) and row["completion"] == last
    # an empty continuation is judged on the prefix alone: its last line is step 3's result, not the answer
    assert start_state_episodes(Continue(""), task, [StartState(problem, 3)], SamplingParams(n=1))[0].info["correct"] is False  # type: ignore[arg-type]
    engine = Continue("9*9=81")
    wrong = start_state_episodes(engine, task, [StartState(problem, 3)], SamplingParams(n=1))  # type: ignore[arg-type]
    assert not wrong[0].info["correct"]
    assert "".join(map(chr, engine.contexts[0])) == problem.prompt + prefix_text(problem, 3)


def test_only_a_number_the_continuation_wrote_is_paid() -> None:
    """An empty continuation from s_k (k >= 1) scores 0, not the prefix's last number; partial reward only
    for a wrong number the continuation itself wrote (issue 26)."""
    task = make_task("chain", {**CHAIN, "partial_reward": 0.2})
    problem = task.problem("train", 0)
    state = [StartState(problem, 3)]
    empty = start_state_episodes(Continue(""), task, state, SamplingParams(n=1))[0]  # type: ignore[arg-type]
    assert (empty.reward, empty.info["correct"]) == (0.0, False)  # was 0.2: step 3's result read as a wrong answer
    words = start_state_episodes(Continue("done"), task, state, SamplingParams(n=1))[0]  # type: ignore[arg-type]
    assert words.reward == 0.0
    wrong = start_state_episodes(Continue("9*9=81"), task, state, SamplingParams(n=1))[0]  # type: ignore[arg-type]
    assert wrong.reward == pytest.approx(0.2)  # a number it wrote, wrong: the partial reward stays
    # a demonstration whose last step only restates the answer (GSM8K's `#### N`): s_{n-1} holds it already
    gsm = Problem("g", "3; +1 *2:\n", "8", ("3+1=4", "4*2=8", "#### 8"))
    held = start_state_episodes(Continue(""), task, [StartState(gsm, 2)], SamplingParams(n=1))[0]  # type: ignore[arg-type]
    assert (held.reward, held.info["correct"]) == (0.0, False)  # was 1.0 and correct
    said = start_state_episodes(Continue("#### 8"), task, [StartState(gsm, 2)], SamplingParams(n=1))[0]  # type: ignore[arg-type]
    assert said.info["correct"] and said.reward == 1.0
    bare = start_state_episodes(Continue("3+1=4\n4*2=8"), task, [StartState(gsm, 0)], SamplingParams(n=1))[0]  # type: ignore[arg-type]
    assert bare.info["correct"]  # from s_0 the whole answer is the continuation's


def test_the_adaptive_rule_moves_a_problem_once_when_it_is_drawn_twice_in_a_step() -> None:
    task = make_task("chain", CHAIN)
    c = Curriculum("adaptive", first=0, pool=1, seed=0, per_step=2, advance_at=0.5, retreat_at=0.0)
    drawn = c.take(task, 2)  # the pool's one problem, twice
    assert [s.k for s in drawn.states] == [3, 3]
    c.observe(drawn, [1.0, 1.0])
    assert c.state_dict()["starts"] == {"0": 2}  # one step back from the k both visits started at, not two


def test_the_prefix_is_context_and_gets_no_gradient(small_policy) -> None:  # type: ignore[no-untyped-def]
    task = make_task("chain", CHAIN)
    problem = task.problem("train", 1)
    episodes = start_state_episodes(small_policy, task, [StartState(problem, 2)], SamplingParams(n=2, max_new_tokens=6))
    assert [s.kind for s in episodes[0].segments] == ["prompt", "prefix", "completion"]
    assert not episodes[0].segment("prefix").trainable
    batch = collate(episodes, small_policy.pad_id)
    width = batch.mask.shape[1]
    prefix, completion = segment_mask(episodes, "prefix", width), segment_mask(episodes, "completion", width)
    prefix_cols = torch.zeros_like(batch.mask)
    for i, e in enumerate(episodes):  # the prefix's target columns (segment_mask marks trainable segments only)
        start = len(e.segment("prompt").token_ids)
        prefix_cols[i, start - 1 : start - 1 + len(e.segment("prefix").token_ids)] = 1
    assert prefix.sum() == 0 and prefix_cols.sum() > 0
    assert torch.equal(batch.mask, completion)
    logp = small_policy.token_logprobs(batch.input_ids, batch.attention_mask)
    logp.retain_grad()
    loss, _ = policy_loss(logp, logp.detach(), torch.ones_like(logp), batch.mask)
    loss.backward()
    assert logp.grad is not None
    assert (logp.grad[prefix_cols == 1] == 0).all() and (logp.grad[completion == 1] != 0).any()


def test_the_staged_curriculum_slides_back_by_steps() -> None:
    task = make_task("chain", CHAIN)  # 4 steps: k from 3 (one step left) back to 0
    c = Curriculum("staged", first=0, pool=6, seed=0, per_step=2, stage_steps=3)
    ks = [[s.k for s in c.take(task, 2).states] for _ in range(12)]
    assert ks == [[3, 3]] * 3 + [[2, 2]] * 3 + [[1, 1]] * 3 + [[0, 0]] * 3


def test_the_mixed_curriculum_is_uniform_over_problem_and_start() -> None:
    task = make_task("chain", CHAIN)
    c = Curriculum("mixed", first=0, pool=5, seed=0, per_step=4)
    drawn = [s for _ in range(5) for s in c.take(task, 4).states]  # one epoch: 5 problems x 4 starts
    pairs = sorted((s.problem.id, s.k) for s in drawn)
    assert pairs == sorted((task.problem("train", i).id, k) for i in range(5) for k in range(4))
    assert [s.k for s in drawn] != sorted(s.k for s in drawn)  # shuffled
    again = Curriculum("mixed", first=0, pool=5, seed=0, per_step=4)
    assert [s.k for s in again.take(task, 20).states] == [s.k for s in drawn]


def test_the_adaptive_rule_on_a_scripted_success_sequence() -> None:
    task = make_task("chain", CHAIN)
    c = Curriculum("adaptive", first=0, pool=1, seed=0, per_step=1, advance_at=0.5, retreat_at=0.0)
    seen = []
    for rate in [1.0, 0.75, 0.25, 0.0, 0.5, 0.5, 0.5, 1.0, 0.0]:
        drawn = c.take(task, 1)
        seen.append(drawn.states[0].k)
        c.observe(drawn, [rate])
    # start one step from the end (k=3); back on >= 0.5, forward on <= 0, still on anything between
    assert seen == [3, 2, 1, 1, 2, 1, 0, 0, 0]
    assert c.state_dict()["starts"] == {"0": 1}
    other = Curriculum("adaptive", first=0, pool=1, seed=0, per_step=1)
    other.load_state_dict(c.state_dict())
    assert other.take(task, 1).states[0].k == 1


def r3_recipe(run_dir: Path, curriculum: str, **extra: Any) -> R3Recipe:
    return R3Recipe.model_validate({
        "run_dir": str(run_dir), "model": {"path": "tiny:small"}, "task": {"name": "chain", "params": CHAIN},
        "steps": 4, "prompts_per_step": 2, "first_problem": 100,
        "sampling": {"n": 3, "temperature": 1.0, "max_new_tokens": 12},
        "optim": {"lr": 1e-3, "micro_batch_size": 16}, "schedule": {"checkpoint_every": 2},
        "eval": {"num_problems": 3, "max_new_tokens": 24},
        "r3": {"curriculum": curriculum, "pool": 4, "stage_steps": 1}, **extra})


def test_r3_defaults_are_the_papers_ppo() -> None:
    loss = r3_recipe(Path("x"), "mixed").loss
    assert (loss.estimator, loss.gamma, loss.lam, loss.eps_low, loss.vf_coef, loss.epochs, loss.kl_coef) == ("gae", 1.0, 0.95, 0.2, 5.0, 2, 0.05)
    assert loss.kl_as_reward and r3_recipe(Path("x"), "mixed").value.kind == "head"
    assert loss.aggregation == "token_mean"  # the official PPO's masked mean over the batch's tokens (issue 26)
    grpo = r3_recipe(Path("x"), "mixed", loss={"estimator": "grpo"}, value={"kind": "none"})
    assert grpo.loss.estimator == "grpo"
    with pytest.raises(Exception, match="retreat_at"):
        r3_recipe(Path("x"), "adaptive", r3={"curriculum": "adaptive", "advance_at": 0.2, "retreat_at": 0.3})


@pytest.mark.parametrize("curriculum", ["staged", "adaptive"])
def test_r3_resumes_exactly_mid_stage(tmp_path: Path, curriculum: str) -> None:
    from safetensors.torch import load_file

    straight = run_r3(r3_recipe(tmp_path / "straight", curriculum))
    rows = [r for r in read_metrics(tmp_path / "straight" / "metrics.jsonl") if "train/k_mean" in r]
    assert len(rows) == 4 and all("train/value_loss" in r for r in rows)
    if curriculum == "staged":
        assert [r["train/k_mean"] for r in rows] == [3.0, 2.0, 1.0, 0.0]
        assert rows[0]["train/k_share/3"] == 1.0 and rows[0]["train/k_share/0"] == 0.0 and "train/k_share/1" not in rows[3]
    else:
        assert all(sum(v for k, v in r.items() if k.startswith("train/k_share/")) == pytest.approx(1.0) for r in rows)
    with pytest.raises(Crash):
        run_r3(r3_recipe(tmp_path / "resumed", curriculum), on_step=crash_at(3))
    resumed = run_r3(r3_recipe(tmp_path / "resumed", curriculum))
    a = load_file(str(tmp_path / "straight" / "final" / "model.safetensors"))
    b = load_file(str(tmp_path / "resumed" / "final" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert straight["accuracy"] == resumed["accuracy"]
    state = json.loads(sorted((tmp_path / "resumed" / "checkpoints").iterdir())[-1].joinpath("state.json").read_text())
    assert state["job"]["stream"]["position"] == 8


def _r3_bench() -> Any:
    """bench/r3.py, imported on demand so that the library's tests here need no bench folder on the path."""
    import sys

    pytest.importorskip("matplotlib")
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
    import r3

    return r3


def test_the_r3_bench_marks_only_a_folder_it_begins_as_judged_on_the_continuation(tmp_path: Path) -> None:
    judgement_of = _r3_bench().judgement_of

    fresh = tmp_path / "fresh"
    assert judgement_of(fresh) == "continuation" and (fresh / "JUDGEMENT").is_file()
    (fresh / "chain6-sft300").mkdir()
    assert judgement_of(fresh) == "continuation"  # resumed: the marker stays
    old = tmp_path / "old"
    (old / "countdown-sft300").mkdir(parents=True)  # runs made before the marker existed
    assert judgement_of(old) == "prefix + continuation (before issue 26)" and not (old / "JUDGEMENT").exists()


def test_the_r3_bench_pools_seeds_per_start_state_by_their_samples() -> None:
    pool_by_start_state = _r3_bench().pool_by_start_state

    runs = [{"success_by_k": {0: 0.5, 2: 1.0}, "samples_by_k": {0: 10, 2: 30}},
            {"success_by_k": {0: 0.2}, "samples_by_k": {0: 40}}]
    pooled = pool_by_start_state(runs)
    # k = 0: (0.5 x 10 + 0.2 x 40) / 50 = 0.26; k = 2: 1.0 from 30 samples; shares 50 / 80 and 30 / 80
    assert pooled["success_by_k"] == pytest.approx({0: 0.26, 2: 1.0})
    assert pooled["share_by_k"] == pytest.approx({0: 0.625, 2: 0.375})
