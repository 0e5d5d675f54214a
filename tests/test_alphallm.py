"""AlphaLLM's loop (issue 11): imagination (validation, dedup), the gold-free tool critic, critics that
rank within a problem, kept-path selection by critic score and gamma, and one tiny end-to-end round
that resumes exactly from the middle of a round."""

from __future__ import annotations

import math

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from helpers import Crash
from test_search_core import EchoTask, ScriptedCritic, ScriptedPolicy

from selfimprove.critics.labels import Example
from selfimprove.critics.metrics import within_problem_auroc
from selfimprove.critics.recipe import CriticTraining
from selfimprove.critics.tool import ToolCritic
from selfimprove.critics.model import ORMCritic
from selfimprove.critics.train import listwise_loss, pairwise_loss, plan_batches, train_critic
from selfimprove.policy.base import Completion
from selfimprove.rollout.imagine import ImagineConfig, imagine, imagine_prompt
from selfimprove.rollout.state import State
from selfimprove.search.mcts import MCTSConfig
from selfimprove.search.self_training import DataConfig, collect_self_data
from selfimprove.tasks import make_task
from selfimprove.tasks.base import Problem

COUNTDOWN = {"num_numbers": 3, "min_number": 1, "max_number": 20, "min_target": 10, "max_target": 50, "format": "steps"}


# ------------------------------------------------------------------------------------ imagination
def test_rewrite_imagination_keeps_only_new_valid_train_problems() -> None:
    task = make_task("countdown", COUNTDOWN)
    seeds = task.problems("train", 8)
    seen = {task.key(p) for p in seeds}
    before = set(seen)
    kept, stats = imagine(ImagineConfig(kind="rewrite", per_round=20), task, seeds, seen=seen, prefix="r1", seed=0)
    assert stats.kept == len(kept) == 20
    assert stats.proposed == stats.malformed + stats.duplicate + stats.test + stats.kept
    keys = [task.key(p) for p in kept]
    assert len(set(keys)) == 20 and not set(keys) & before and set(keys) <= seen  # new, distinct, remembered
    for p in kept:
        assert not task.in_test_split(p)
        assert task.verify(p, p.demonstration_text()).correct  # solvable: the solver's demonstration is right
    assert [p.id for p in kept] == [f"r1-{k}" for k in range(20)]
    again, _ = imagine(ImagineConfig(kind="rewrite", per_round=20), task, seeds, seen={task.key(p) for p in seeds}, prefix="r1", seed=0)
    assert [p.prompt for p in again] == [p.prompt for p in kept]  # seeded


@dataclass
class LinesSampler:
    """A stand-in engine that proposes the given lines, in order."""

    lines: list[str]
    tokens_each: int = 5

    def __post_init__(self) -> None:
        self.contexts: list[str] = []

    def make_generator(self, seed: int) -> torch.Generator:
        return torch.Generator().manual_seed(seed)

    def generate(self, prompts: list[str], params: Any, *, generator: Any = None) -> list[Completion]:
        self.contexts += prompts
        out = []
        for i, _ in enumerate(prompts):
            text = self.lines.pop(0) if self.lines else ""
            out.append(Completion(i, [], [1] * self.tokens_each, text, [0.0] * self.tokens_each, "stop"))
        return out


def test_policy_imagination_counts_every_kind_of_rejection() -> None:
    task = make_task("countdown", COUNTDOWN)
    seeds = task.problems("train", 4)
    test_problem = task.problems("test", 1)[0]
    fresh = next(p for p in task.problems("train", 50, start=100) if task.key(p) not in {task.key(s) for s in seeds})
    lines = [
        "hello there",  # malformed
        "99 1 2 -> 30:",  # a number out of range
        "1 1 1 -> 49:",  # unreachable target
        seeds[0].prompt.strip(),  # a seed again
        test_problem.prompt.strip(),  # a test-split problem
        fresh.prompt.strip(),  # a new valid one
        fresh.prompt.strip(),  # the same again in this round
    ]
    sampler = LinesSampler(list(lines))
    kept, stats = imagine(ImagineConfig(kind="policy", per_round=3, max_proposals=3), task, seeds,
                          seen={task.key(p) for p in seeds}, prefix="p", seed=0, sampler=sampler)  # type: ignore[arg-type]
    assert [p.prompt for p in kept] == [fresh.prompt]
    # 3 wanted x 3 proposals each = 9 proposals at most: the two after the script ran out are empty
    assert (stats.proposed, stats.malformed, stats.duplicate, stats.test, stats.kept) == (9, 5, 2, 1, 1)
    assert stats.tokens == 9 * 5
    assert all(c.startswith("new problems:\n") and c.count("->") == 2 for c in sampler.contexts)
    assert imagine_prompt(seeds[:1], chat=True).startswith("Here are some problems")


def test_tasks_that_cannot_validate_refuse_policy_imagination() -> None:
    task = make_task("gsm8k")
    with pytest.raises(NotImplementedError, match="cannot validate model-written problems"):
        imagine(ImagineConfig(kind="policy", per_round=1), task, task.problems("train", 2), seen=set(), prefix="x", seed=0,
                sampler=LinesSampler(["x"]))  # type: ignore[arg-type]
    with pytest.raises(NotImplementedError, match="no rewrite"):
        imagine(ImagineConfig(kind="rewrite", per_round=1), task, task.problems("train", 2), seen=set(), prefix="x", seed=0)


def test_chain_prompts_round_trip_through_validation() -> None:
    task = make_task("chain", {"num_steps": 4})
    p = task.problem("train", 3)
    back = task.problem_from_prompt(p.prompt, "again")
    assert back is not None and back.prompt == p.prompt and back.answer == p.answer
    assert task.problem_from_prompt("3; +1:", "short") is None  # too few steps
    rewritten = task.rewrite(p, __import__("random").Random(0), "rw")
    assert rewritten is not None and [op for op, _ in rewritten.metadata["steps"]] == [op for op, _ in p.metadata["steps"]]


# ------------------------------------------------------------------------------------ the tool critic
class NoGold(Problem):
    """A problem whose gold answer, demonstration and metadata cannot be read: the tool critic must not."""

    def __getattribute__(self, name: str) -> Any:
        if name in ("answer", "demonstration", "metadata"):
            raise AssertionError(f"the tool critic read the problem's {name}")
        return super().__getattribute__(name)


def state(text: str, finished: bool) -> State:
    lines = tuple(line + "\n" for line in text.split("\n")) if text else ()
    return State(0, (1,), lines, tuple(() for _ in lines), finished)


def test_the_tool_critic_judges_countdown_from_the_prompt_alone() -> None:
    task = make_task("countdown", COUNTDOWN)
    critic = ToolCritic(task)
    problem = NoGold("x", "17 1 20 -> 36:\n", "")
    cases = [
        ("20+17=37\n37-1=36", True, 1.0),  # right
        ("20+17=37\n37+1=38", True, 0.0),  # wrong target
        ("20+17=38", False, 0.0),  # a wrong sum refutes a partial answer
        ("20+20=40", False, 0.0),  # 20 used twice
        ("20+17=37", False, 0.5),  # consistent so far: undecided
        ("", False, 0.5),
    ]
    scores = critic.score([problem], [state(text, finished) for text, finished, _ in cases])
    assert scores == [expected for _, _, expected in cases]
    assert ToolCritic.uses_gold_answers is False


def test_the_tool_critic_checks_only_the_arithmetic_of_a_chain() -> None:
    task = make_task("chain", {"num_steps": 3})
    critic = ToolCritic(task)
    problem = NoGold("x", "7; +5 *3 -4:\n", "")
    # the right chain, a chain with right arithmetic but the wrong operations, and an arithmetic error
    scores = critic.score([problem], [state("7+5=12\n12*3=36\n36-4=32", True), state("7*5=35\n35+3=38\n38-4=34", True),
                                      state("7+5=12\n12*3=37", False)])
    assert scores == [0.5, 0.5, 0.0]


def test_a_task_without_a_gold_free_check_refuses_the_tool_critic() -> None:
    with pytest.raises(ValueError, match="no gold-free tool check"):
        ToolCritic(make_task("function_call"))


# ------------------------------------------------------------------------------------ ranking critics
def test_the_pairwise_loss_and_the_within_problem_auroc_by_hand() -> None:
    # problem a: logits [2, 0, 1], labels [1, 0, 0]: pairs (0,1) -log sig(2) = 0.126928 and (0,2)
    #   -log sig(1) = 0.313262; problem b: labels [1, 1]: no pair
    loss, pairs = pairwise_loss(torch.tensor([2.0, 0.0, 1.0, 5.0, 4.0]), torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0]),
                                ["a", "a", "a", "b", "b"])
    assert pairs == 2 and loss.item() == pytest.approx(0.126928 + 0.313262, abs=1e-6)
    # within-problem AUROC: problem a orders (0.9 > 0.2) right, (0.9 vs 0.9) a tie; problem b (0.1 < 0.8) wrong
    #   -> (1 + 0.5 + 0) / 3; the pooled AUROC would reward telling b's hard problem apart, this does not
    scores, labels, groups = [0.9, 0.2, 0.9, 0.1, 0.8], [1.0, 0.0, 0.0, 1.0, 0.0], ["a", "a", "a", "b", "b"]
    assert within_problem_auroc(scores, labels, groups) == pytest.approx(1.5 / 3)
    assert within_problem_auroc([0.3], [1.0], ["a"]) == 0.5


def test_the_listwise_loss_by_hand() -> None:
    # problem a: logits [0, ln 3], labels [0, 1]: the right answer holds 3/4 of the softmax -> -ln 0.75;
    # problem b: logits [0, 0, ln 2], labels [1, 1, 0]: the right ones hold 2/4 -> ln 2; problem c has no
    # wrong answer and counts for nothing
    z = torch.tensor([0.0, math.log(3.0), 0.0, 0.0, math.log(2.0), 7.0])
    loss, lists = listwise_loss(z, torch.tensor([0.0, 1.0, 1.0, 1.0, 0.0, 1.0]), ["a", "a", "b", "b", "b", "c"])
    assert lists == 2 and loss.item() == pytest.approx(-math.log(0.75) + math.log(2.0), abs=1e-6)
    empty, none = listwise_loss(torch.tensor([1.0], requires_grad=True), torch.tensor([1.0]), ["a"])
    assert none == 0 and empty.item() == 0.0 and empty.requires_grad


def test_a_listwise_critic_trains_with_whole_problems_per_batch(small_policy) -> None:
    examples = [Example("orm", (5, 6 + k % 2, 7), float(k % 2), f"p{k // 4}", 1, True, float(k % 2), 0) for k in range(16)]
    critic = ORMCritic.from_policy(small_policy, batch_size=8)
    config = CriticTraining(epochs=3, batch_size=8, objective="listwise", optim={"lr": 3e-3, "micro_batch_size": 8})
    report = train_critic(critic, examples[:12], examples[12:], config)
    assert report["last_train_loss"] < report["first_train_loss"]
    assert report["after"]["within_auroc"] == 1.0  # token 7 vs 6 before the end: the critic learned which is right


def test_ranking_batches_hold_whole_problems() -> None:
    examples = [Example("orm", (1, k), float(k % 2), f"p{k // 3}", 1, True, float(k % 2), 0) for k in range(30)]
    epochs = plan_batches(examples, CriticTraining(epochs=2, batch_size=7, objective="mixed"), seed=0)
    for batches in epochs:
        assert sorted(i for b in batches for i in b) == list(range(30))
        for b in batches:
            groups = {examples[i].group for i in b}
            assert all(sum(1 for i in b if examples[i].group == g) == 3 for g in groups)  # whole problems
    assert plan_batches(examples, CriticTraining(epochs=1, batch_size=7), seed=0)[0][0] != epochs[0][0]


# ------------------------------------------------------------------------------------ kept paths
def test_kept_paths_are_the_critics_best_above_gamma() -> None:
    policy = ScriptedPolicy(lambda ctx, j: ["3$", "9$", "5$", "1$"][j % 4])
    task = EchoTask()
    problems = task.problems("test", 10)[3:6]  # answers 3, 4, 5
    critic = ScriptedCritic(lambda a: int(a) / 10)
    config = DataConfig(source="samples", gamma=0.6, samples=4, dpo_margin=0.5)
    search = MCTSConfig(max_answer_tokens=4)
    got = collect_self_data(policy, task, problems, config, budget_tokens=3 * 100, search=search, value=None,
                            outcome=critic, seed=0)
    # every prompt's best answer is 9 (score 0.9 > gamma 0.6); 9 is right only for none of 3, 4, 5
    assert [e.segment("completion").text for e in got.kept] == ["9", "9", "9"]
    assert got.kept_right == 0 and got.finished == 3 and got.tokens == 3 * 4 * 2
    # pairs: best (9, 0.9) against worst (1, 0.1), margin 0.8 > 0.5
    assert [(a.segment("completion").text, b.segment("completion").text) for a, b in got.pairs] == [("9", "1")] * 3
    strict = collect_self_data(policy, task, problems, config.model_copy(update={"gamma": 0.95}), budget_tokens=300,
                               search=search, value=None, outcome=critic, seed=0)
    assert strict.kept == []


def test_search_data_keeps_the_best_scored_path_whatever_the_search_answers_with(monkeypatch: pytest.MonkeyPatch) -> None:
    """SPECS §5: per prompt the finished path with the best critic score is kept. A search tuned to answer
    by visits at test time (`final: visits`, as the shipped recipe) must still keep by score (issue 26)."""
    import selfimprove.search.mcts as mcts

    seen: list[str] = []
    real = mcts.mcts_trees

    def spy(policy, problems, config, *a, **k):  # type: ignore[no-untyped-def]
        seen.append(config.final)
        return real(policy, problems, config, *a, **k)

    monkeypatch.setattr(mcts, "mcts_trees", spy)
    policy = ScriptedPolicy(lambda ctx, j: ["3$", "9$", "5$", "1$"][j % 4])
    task = EchoTask()
    critic = ScriptedCritic(lambda a: int(a) / 10 if a else 0.5)
    search = MCTSConfig(max_answer_tokens=4, final="visits", simulations=4, branching=2)
    got = collect_self_data(policy, task, task.problems("test", 10)[3:5], DataConfig(source="mcts", gamma=0.0),
                            budget_tokens=200, search=search, value=critic, outcome=critic, seed=0)
    assert seen == ["value"] and got.kept
    assert all(e.reward == pytest.approx(0.9) for e in got.kept)  # 9, the best score any path can have here


# ------------------------------------------------------------------------------------ the loop
def loop_recipe(run_dir: Path, model: Path) -> Any:
    from selfimprove.methods.alphallm import AlphaLLMRecipe

    return AlphaLLMRecipe.model_validate({
        "run_dir": str(run_dir), "seed": 0, "model": {"path": str(model)},
        "task": {"name": "countdown", "params": {"num_numbers": 2, "max_number": 9, "min_target": 1, "max_target": 20, "format": "steps"}},
        "rounds": 1, "seeds": 6, "first_problem": 100,
        "imagine": {"kind": "rewrite", "per_round": 3}, "budget_tokens": 1500,
        "data": {"source": "mcts", "gamma": 0.0, "problems_per_batch": 9},
        "search": {"simulations": 2, "max_answer_tokens": 12, "step": {"kind": "newline", "max_step_tokens": 8}, "branching": 2, "max_depth": 3},
        "tool": True,
        "critics": {"critics": ["value", "orm"], "step_rule": {"kind": "newline", "max_step_tokens": 8},
                    "labels": {"num_problems": 6, "samples_per_problem": 2, "rollouts_per_prefix": 2, "max_new_tokens": 12},
                    "training": {"epochs": 1, "batch_size": 16, "objective": "mixed"}},
        "sft": {"batch_size": 4, "optim": {"lr": 1e-3}, "schedule": {"checkpoint_every": 2}}, "sft_epochs": 2.0,
        "eval": {"num_problems": 4, "max_new_tokens": 12},
    })


def crash_in(stage: str, at: int):  # type: ignore[no-untyped-def]
    """A stage bar that crashes the run at step `at` of the stage whose label contains `stage`."""
    from contextlib import contextmanager

    @contextmanager
    def bar(description: str, total: int):  # type: ignore[no-untyped-def]
        def on_step(step: int, metrics: dict[str, Any]) -> None:
            if stage in description and step >= at:
                raise Crash(f"simulated crash in {description} at {step}")

        yield on_step

    return bar


def test_one_round_end_to_end_and_an_exact_resume_mid_round(small_model_dir: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    from selfimprove.cli import main
    from selfimprove.methods.alphallm import run_alphallm

    straight = run_alphallm(loop_recipe(tmp_path / "straight", small_model_dir))
    r0, r1 = straight["rounds"]
    assert r0["round"] == 0 and r1["round"] == 1 and r1["imagined"] == 3 and r1["kept"] > 0
    assert {"greedy", "search", "kept", "tokens", "label_tokens"} <= r1.keys() and r1["tokens"] > 0
    data = json.loads((tmp_path / "straight" / "round1" / "data.json").read_text())
    assert data["prompts"] == 9 and data["kept"] == r1["kept"]
    with pytest.raises(Crash):  # crash in the middle of round 1's SFT, after its step-2 checkpoint
        run_alphallm(loop_recipe(tmp_path / "resumed", small_model_dir), crash_in("SFT", 3))
    resumed = run_alphallm(loop_recipe(tmp_path / "resumed", small_model_dir))
    a = load_file(str(tmp_path / "straight" / "round1" / "sft" / "final" / "model.safetensors"))
    b = load_file(str(tmp_path / "resumed" / "round1" / "sft" / "final" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [{k: v for k, v in row.items() if k != "model"} for row in resumed["rounds"]] == \
        [{k: v for k, v in row.items() if k != "model"} for row in straight["rounds"]]
    # the CLI command: a finished run only reports
    recipe = tmp_path / "r.json"
    recipe.write_text(json.dumps({**loop_recipe(tmp_path / "straight", small_model_dir).model_dump(mode="json"), "method": "alphallm"}))
    assert main(["alphallm", str(recipe)]) == 0


def test_a_search_recipe_can_use_the_tool_critic_at_test_time(small_model_dir: Path, tmp_path: Path) -> None:
    from selfimprove.search.recipe import SearchRecipe
    from selfimprove.search.run import run_search_eval

    recipe = SearchRecipe.model_validate({
        "run_dir": str(tmp_path / "s"), "model": {"path": str(small_model_dir)},
        "task": {"name": "countdown", "params": {"num_numbers": 2, "max_number": 9, "min_target": 1, "max_target": 20, "format": "steps"}},
        "num_problems": 4, "search": {"name": "mcts", "params": {"simulations": 2, "max_answer_tokens": 10, "branching": 2}},
        "critics": {"tool": True, "outcome": "tool"}})
    summary = run_search_eval(recipe)
    assert summary["problems"] == 4 and summary["critics"]["members"] == {"tool": None} and not summary["uses_gold_answers"]
    with pytest.raises(Exception, match="outcome_tool"):
        SearchRecipe.model_validate({"run_dir": "x", "search": {"name": "mcts"}, "critics": {"tool": True, "outcome_tool": True}})


def test_the_loops_search_scores_with_value_prm_and_orm_as_the_paper(small_policy: Any, small_model_dir: Path, tmp_path: Path) -> None:
    """A PRM the recipe trains is part of the search's score (s = v + PRM for unfinished states, the ORM on
    finished ones and fast rollouts), flat beside the tool critic; it used to be trained and ignored (issue 26)."""
    from selfimprove.critics.model import CRITICS
    from selfimprove.methods.alphallm import Loop

    folder = tmp_path / "critics"
    for kind in ("value", "prm", "orm"):
        CRITICS[kind].from_policy(small_policy, batch_size=8).save(folder / kind, tokenizer_of=small_policy)
    recipe = loop_recipe(tmp_path / "run", small_model_dir)
    value, outcome = Loop(recipe.model_copy(update={"tool": False})).critic_pair(folder)
    assert [c.name for c in value.critics] == ["value", "prm"] and outcome.name == "orm"
    value, outcome = Loop(recipe).critic_pair(folder)  # with the tool critic: one flat mean, equal weights
    assert [c.name for c in value.critics] == ["value", "prm", "tool"] and value.weights == [1.0, 1.0, 1.0]
    assert [c.name for c in outcome.critics] == ["orm", "tool"]
    assert value.calls_per_score == 3 and outcome.calls_per_score == 2
    (folder / "prm").rename(folder / "unused")  # no PRM trained: value alone, as before
    value, _ = Loop(recipe.model_copy(update={"tool": False})).critic_pair(folder)
    assert value.name == "value"
