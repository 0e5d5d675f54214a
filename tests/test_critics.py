"""Critics: Monte-Carlo labels on a scripted policy, learned critics on the tiny model, verifier,
combined scores, and `selfimprove critic train` end to end."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import pytest
import torch

from selfimprove.cli import main
from selfimprove.config import validate
from selfimprove.critics.base import score_states
from selfimprove.critics.combined import CombinedCritic
from selfimprove.critics.labels import (Example, balance_labels, build_labels, estimate_prefixes, load_labels, save_labels, smooth_labels,
                                       step_boundaries)
from selfimprove.critics.model import ORMCritic, PRMCritic, ValueCritic, critic_input, load_critic
from selfimprove.critics.recipe import CriticRecipe, CriticTraining, LabelsConfig
from selfimprove.critics.run import run_critic_training
from selfimprove.critics.train import split_examples, train_critic
from selfimprove.critics.verifier import VerifierCritic
from selfimprove.policy.base import Completion, SamplingParams
from selfimprove.rollout.budget import Budget
from selfimprove.rollout.state import State, StepRule
from selfimprove.tasks.base import Problem, Task, Verdict
from selfimprove.tasks.plugins import make_task

RECIPES = Path(__file__).resolve().parent.parent / "recipes"
EOS = 0


# --------------------------------------------------------------------------------------- scripted world
class ScriptedPolicy:
    """Characters as token ids (id = ord), end token 0. Each call answers a prompt (prompt + completion
    so far, as text) with its scripted continuations, in order, cycling: deterministic labels."""

    eos_ids = [EOS]

    def __init__(self, script: dict[str, list[str]]) -> None:
        self.script = script
        self.calls: list[int] = []  # rows per generate call
        self.caps: list[int] = []  # max_new_tokens per generate call

    def encode_prompt(self, text: str) -> list[int]:
        return [ord(c) for c in text]

    def detokenize(self, ids: Sequence[int]) -> str:
        return "".join(chr(i) for i in ids if i != EOS)

    def generate_ids(self, prompt_ids: Sequence[Sequence[int]], params: SamplingParams, *,
                     generator: torch.Generator | None = None) -> list[Completion]:
        self.calls.append(len(prompt_ids) * params.n)
        self.caps.append(params.max_new_tokens)
        out = []
        for i, row in enumerate(prompt_ids):
            options = self.script[self.detokenize(row)]
            for k in range(params.n):
                text = options[k % len(options)]
                out.append(Completion(i, list(row), [ord(c) for c in text] + [EOS], text, [], "eos"))
        return out


class ExactTask(Task):
    """Right iff the text equals the gold answer."""

    name = "exact"

    def problem(self, split, index):  # pragma: no cover - problems are built by hand here
        raise NotImplementedError

    def verify(self, problem: Problem, text: str) -> Verdict:
        return Verdict.right() if text == problem.answer else Verdict.wrong("different")


A = Problem("a", "A:", "x\ny")
B = Problem("b", "B:", "w\nq")
SCRIPT = {
    "A:": ["x\ny", "x\nz"],  # two samples: right, wrong; they share the prefix "x\n"
    "A:x\n": ["y", "z", "z", "z"],  # rollouts from "x\n": 1 of 4 right
    "B:": ["w\nq"],  # two identical samples (deduplicated)
    "B:w\n": ["q", "q", "q", "v"],  # 3 of 4 right
}
LABELS = LabelsConfig(samples_per_problem=2, rollouts_per_prefix=4, problems_per_batch=2)


def ids(text: str, *, finished: bool = False) -> tuple[int, ...]:
    return tuple(critic_input([ord(c) for c in text], finished=finished, eos_ids=[EOS]))


def by_kind(examples: list[Example], kind: str) -> dict[tuple[int, ...], Example]:
    return {e.token_ids: e for e in examples if e.kind == kind}


# --------------------------------------------------------------------------------------- labels
def test_monte_carlo_labels_by_hand() -> None:
    policy = ScriptedPolicy(SCRIPT)
    done: list[int] = []
    examples = build_labels(policy, ExactTask(), [A, B], StepRule("newline"), LABELS, on_problems=done.append)
    assert done == [2]
    assert policy.calls == [4, 8]  # one sampling call (2 problems x 2), one rollout call (2 prefixes x 4)

    value = by_kind(examples, "value")
    assert {k: (e.label, e.depth, e.finished, e.rollouts) for k, e in value.items()} == {
        ids("A:"): (0.5, 0, False, 2),  # the samples are the root's rollouts: 1 of 2 right
        ids("A:x\n"): (0.25, 1, False, 4),
        ids("A:x\ny", finished=True): (1.0, 2, True, 0),
        ids("A:x\nz", finished=True): (0.0, 2, True, 0),
        ids("B:"): (1.0, 0, False, 2),
        ids("B:w\n"): (0.75, 1, False, 4),
        ids("B:w\nq", finished=True): (1.0, 2, True, 0),  # two identical samples, one example
    }
    prm = by_kind(examples, "prm")
    assert {k: e.label for k, e in prm.items()} == {
        ids("A:x\n"): 1.0,  # hard label: some rollout from it is right (estimate 0.25)
        ids("A:x\ny", finished=True): 1.0,
        ids("A:x\nz", finished=True): 0.0,
        ids("B:w\n"): 1.0,
        ids("B:w\nq", finished=True): 1.0,
    }
    assert prm[ids("A:x\n")].estimate == 0.25
    orm = by_kind(examples, "orm")
    assert {k: e.label for k, e in orm.items()} == {
        ids("A:x\ny", finished=True): 1.0,
        ids("A:x\nz", finished=True): 0.0,
        ids("B:w\nq", finished=True): 1.0,
        ids("B:w\nv", finished=True): 0.0,  # a rollout's answer: an ORM example for free
    }
    assert {e.group for e in examples} == {"A:", "B:"}


def test_prefixes_are_estimated_again_with_fresh_rollouts() -> None:
    policy = ScriptedPolicy(SCRIPT)
    config = LABELS.model_copy(update={"rollouts_per_prefix": 8})
    got = estimate_prefixes(policy, ExactTask(), [A, B], [(0, []), (0, [ord("x"), ord("\n")]), (1, [ord("w"), ord("\n")])], config)
    # From "A:": x\ny, x\nz cycling -> 4 of 8 right; from "A:x\n": y, z, z, z twice -> 2 of 8; "B:w\n": 6 of 8.
    assert got == [(4, 8), (2, 8), (6, 8)]
    assert policy.calls == [24]  # one call: 3 prefixes x 8


def test_soft_prm_labels_small_rollout_calls_and_kind_filter() -> None:
    policy = ScriptedPolicy(SCRIPT)
    config = LABELS.model_copy(update={"prm_label": "soft", "max_rollout_rows": 4, "rollout_outcomes": False})
    examples = build_labels(policy, ExactTask(), [A, B], StepRule("newline"), config, kinds=("prm", "orm"))
    assert policy.calls == [4, 4, 4]  # 4 rows per rollout call: one prefix each
    assert {e.kind for e in examples} == {"prm", "orm"}
    prm = by_kind(examples, "prm")
    assert prm[ids("A:x\n")].label == 0.25 and prm[ids("B:w\n")].label == 0.75
    assert ids("B:w\nv", finished=True) not in by_kind(examples, "orm")


def test_rollouts_share_the_samples_answer_cap() -> None:
    # cap 5 tokens: the sample "ab\ncd" fits; from the 3-token prefix "ab\n" a rollout may add 2 tokens, so
    # "cdx" is cut to "cd" (right, as a sample drawn with the cap would be) and "xy" stays wrong
    problem = Problem("c", "C:", "ab\ncd")
    policy = ScriptedPolicy({"C:": ["ab\ncd"], "C:ab\n": ["cdx", "xy"]})
    config = LabelsConfig(samples_per_problem=1, rollouts_per_prefix=2, max_new_tokens=5)
    examples = build_labels(policy, ExactTask(), [problem, problem], StepRule("newline"), config, kinds=("value",))
    assert policy.caps == [5, 2] and policy.calls == [2, 2]  # the same problem twice shares one prefix's rollouts
    value = by_kind(examples, "value")
    assert value[ids("C:ab\n")].label == 0.5
    assert (value[ids("C:")].label, value[ids("C:")].rollouts) == (1.0, 2)  # both copies' samples pooled
    assert len(examples) == 3  # root, prefix and answer once each


def test_labels_round_trip_through_jsonl(tmp_path: Path) -> None:
    examples = build_labels(ScriptedPolicy(SCRIPT), ExactTask(), [A, B], StepRule("newline"), LABELS)
    path = save_labels(tmp_path / "labels.jsonl", examples)
    assert load_labels(path) == examples
    assert json.loads(path.read_text().splitlines()[0])["text"] in {"x\ny", "x\nz", "w\nq", "w\nv"}


class Pieces:
    """A tokenizer whose tokens are multi-character pieces (like BPE), for step boundaries."""

    eos_ids = [EOS]
    pieces = {1: "ab", 2: "\nc", 3: "d\n", 4: "e"}

    def detokenize(self, seq: Sequence[int]) -> str:
        return "".join(self.pieces.get(i, "") for i in seq)


def test_label_smoothing_by_rollout_count_by_hand() -> None:
    """(r + a) / (n + 2a) for a Monte-Carlo label of r right in n; a hard PRM 0 becomes a / (n + 2a), a hard 1
    stays 1 (a right rollout proves the step can still succeed); exact verdicts (0 rollouts) are kept."""
    def ex(kind: str, label: float, estimate: float, rollouts: int, finished: bool = False) -> Example:
        return Example(kind, (1, 2), label, "p", 1, finished, estimate, rollouts)  # type: ignore[arg-type]

    examples = [ex("value", 0.25, 0.25, 8), ex("value", 1.0, 1.0, 4), ex("prm", 0.0, 0.0, 8), ex("prm", 1.0, 0.375, 8),
                ex("orm", 1.0, 1.0, 0, True), ex("value", 0.0, 0.0, 0, True), ex("prm", 1.0, 1.0, 0, True)]
    got = [e.label for e in smooth_labels(examples, 1.0, prm_label="hard")]
    assert got == pytest.approx([3 / 10, 5 / 6, 1 / 10, 1.0, 1.0, 0.0, 1.0])
    soft = [ex("prm", 0.75, 0.75, 4), ex("prm", 0.5, 0.5, 4)]
    assert [e.label for e in smooth_labels(soft, 1.0, prm_label="soft")] == pytest.approx([4 / 6, 3 / 6])
    assert [e.label for e in smooth_labels(soft, 2.0, prm_label="soft")] == pytest.approx([5 / 8, 4 / 8])
    assert smooth_labels(examples, 0.0, prm_label="hard") == examples  # 0: the labels as they are
    with pytest.raises(ValueError, match="pseudo-count"):
        smooth_labels(examples, -1.0, prm_label="hard")


def test_balance_labels_draws_the_rarer_class_of_each_kind_until_even() -> None:
    def ex(kind: str, label: float, group: str) -> Example:
        return Example(kind, (1, 2), label, group, 1, kind == "orm", label, 0 if kind == "orm" else 4)  # type: ignore[arg-type]

    orm = [ex("orm", 1.0, "a"), ex("orm", 0.0, "b"), ex("orm", 0.0, "c"), ex("orm", 0.0, "d")]  # 1 right, 3 wrong
    value = [ex("value", 0.75, "a"), ex("value", 0.5, "b"), ex("value", 0.25, "c")]  # 2 at >= 0.5, 1 below
    prm = [ex("prm", 1.0, "a"), ex("prm", 1.0, "b")]  # one class only: nothing to draw
    got = balance_labels(orm + value + prm, seed=0)
    assert got[:9] == orm + value + prm  # order kept, draws appended
    drawn = got[9:]
    assert sorted((e.kind, e.label) for e in drawn) == [("orm", 1.0), ("orm", 1.0), ("value", 0.25)]  # 3 + 3 and 2 + 2
    for kind in ("orm", "value"):
        mine = [e for e in got if e.kind == kind]
        assert sum(e.label >= 0.5 for e in mine) == sum(e.label < 0.5 for e in mine)
    assert balance_labels(orm + value + prm, seed=0) == got  # the seed decides the draws
    assert balance_labels(prm, seed=0) == prm and balance_labels([], seed=0) == []


def test_run_critic_training_smooths_only_the_training_labels(small_model_dir: Path, tmp_path: Path, monkeypatch) -> None:
    """`training.label_smoothing` reaches the training examples; the held-out ones keep their raw labels."""
    import selfimprove.critics.run as run_module

    seen: dict[str, list[float]] = {}

    def spy(critic, train, held_out, config, **kwargs):
        seen["train"] = [e.label for e in train]
        seen["held_out"] = [e.label for e in held_out]
        raise RuntimeError("stop here")

    monkeypatch.setattr(run_module, "train_critic", spy)
    examples = [Example("value", (5, 6, 7), q, f"problem {g}", 1, False, q, 4) for g in range(6) for q in (0.0, 0.5, 1.0)]
    save_labels(tmp_path / "labels.jsonl", examples)
    recipe = validate(CriticRecipe, {"run_dir": str(tmp_path / "run"), "model": {"path": str(small_model_dir)},
                                     "task": {"name": "countdown"}, "critics": ["value"],
                                     "labels": {"path": str(tmp_path / "labels.jsonl")},
                                     "training": {"label_smoothing": 1.0, "eval_fraction": 0.5}})
    with pytest.raises(RuntimeError, match="stop here"):
        run_module.run_critic_training(recipe)
    assert sorted(set(seen["train"])) == pytest.approx([1 / 6, 3 / 6, 5 / 6])
    assert sorted(set(seen["held_out"])) == [0.0, 0.5, 1.0]
    # `training.balance`: per problem 2 labels >= 0.5 and 1 below, so the training set gains one draw of a 0 per
    # problem it holds (3 problems: 9 + 3); the held-out set stays raw
    balanced = recipe.model_copy(update={"training": recipe.training.model_copy(update={"balance": True, "label_smoothing": 0.0})})
    with pytest.raises(RuntimeError, match="stop here"):
        run_module.run_critic_training(balanced)
    assert len(seen["train"]) == 12 and sum(q >= 0.5 for q in seen["train"]) == 6 and len(seen["held_out"]) == 9


def test_step_boundaries_map_text_steps_to_tokens() -> None:
    # "ab\ncd\ne": steps "ab\n" | "cd\n" | "e"; token "\nc" straddles the first boundary and joins step 1
    assert step_boundaries(Pieces(), [1, 2, 3, 4], StepRule("newline")) == [2, 3, 4]
    assert step_boundaries(Pieces(), [], StepRule("newline")) == []
    # a step longer than max_step_tokens is cut every max_step_tokens tokens, as a search cuts it
    long = [ord(c) for c in "abcdefg\nhi"]
    assert step_boundaries(ScriptedPolicy({}), long, StepRule("newline", max_step_tokens=3)) == [3, 6, 8, 10]


def test_critic_input_normalises_end_tokens() -> None:
    assert critic_input([5, 6, 0], finished=False, eos_ids=[0, 9]) == [5, 6]
    assert critic_input([5, 6, 0], finished=True, eos_ids=[0, 9]) == [5, 6, 0]
    assert critic_input([5, 6], finished=True, eos_ids=[0, 9]) == [5, 6, 0]
    assert critic_input([5, 6, 9], finished=True, eos_ids=[0, 9]) == [5, 6, 0]


# --------------------------------------------------------------------------------------- learned critics
def toy_examples(tokenizer, kind: str = "orm") -> list[Example]:
    """Separable: the label is 1 iff the sequence ends with '1'. 12 problems, 4 examples each."""
    out = []
    for p in range(12):
        for k, tail in enumerate("1010"):
            text = f"{p}+{k}={tail}"
            out.append(Example(kind, tuple(tokenizer(text).input_ids), float(tail == "1"), f"p{p}", 1, True,
                               float(tail == "1"), 0, text))
    return out


def test_a_critic_learns_a_separable_toy_label_set(small_policy) -> None:
    examples = toy_examples(small_policy.tokenizer)
    train, held_out = split_examples(examples, 0.25, seed=0)
    assert {e.group for e in train}.isdisjoint({e.group for e in held_out}) and len({e.group for e in held_out}) == 3
    critic = ORMCritic.from_policy(small_policy)
    config = CriticTraining(epochs=15, batch_size=12, optim={"lr": 3e-3, "micro_batch_size": 5})
    report = train_critic(critic, train, held_out, config, seed=0)
    assert report["before"]["mean_score"] == pytest.approx(0.5)  # zero head: every score starts at 0.5
    assert report["steps"] == 45
    assert report["last_train_loss"] < 0.5 * report["first_train_loss"]
    assert report["after"]["loss"] < report["before"]["loss"]
    assert report["after"]["accuracy"] == 1.0 and report["after"]["precision"] == 1.0 and report["after"]["recall"] == 1.0
    assert report["after"]["auroc"] == 1.0
    with pytest.raises(ValueError, match="cannot train on"):
        train_critic(ValueCritic.from_policy(small_policy), train, held_out, config)


def test_training_leaves_the_policy_alone_and_save_load_gives_the_same_scores(small_policy, tmp_path: Path) -> None:
    before = {k: v.clone() for k, v in small_policy.model.state_dict().items()}
    examples = toy_examples(small_policy.tokenizer, "value")
    train, held_out = split_examples(examples, 0.25, seed=1)
    critic = ValueCritic.from_policy(small_policy, meta={"note": "toy"})
    train_critic(critic, train, held_out, CriticTraining(epochs=2, batch_size=16, optim={"lr": 1e-3}), seed=0)
    assert all(torch.equal(v, small_policy.model.state_dict()[k]) for k, v in before.items())

    critic.save(tmp_path / "value", tokenizer_of=small_policy)
    loaded = load_critic(tmp_path / "value", batch_size=3)
    assert isinstance(loaded, ValueCritic) and loaded.meta == {"note": "toy"} and loaded.eos_ids == critic.eos_ids
    rows = [e.token_ids for e in examples[:7]]
    assert loaded.score_ids(rows) == pytest.approx(critic.score_ids(rows), abs=1e-6)
    assert len(set(round(s, 4) for s in critic.score_ids(rows))) > 1  # the head moved off 0.5

    # scoring states: the critic reads prompt + steps (+ an end token when finished), batched
    prompt = tuple(small_policy.encode_prompt("7 3 -> 10:\n"))
    step = tuple(small_policy.encode_completion("7+3=10", add_eos=False))
    states = [State(0, prompt), State(0, prompt, ("7+3=10",), (step,)), State(0, prompt, ("7+3=10",), (step,), finished=True)]
    scores = loaded.score([Problem("p", "7 3 -> 10:\n", "10")], states)
    expected = loaded.score_ids([list(prompt), list(prompt + step), list(prompt + step) + [small_policy.eos_ids[0]]])
    assert scores == pytest.approx(expected) and all(0.0 <= s <= 1.0 for s in scores)
    assert scores[1] != pytest.approx(scores[2], abs=1e-7)  # finished and unfinished are different inputs
    with pytest.raises(FileNotFoundError, match="not a critic folder"):
        load_critic(tmp_path)


def test_scores_do_not_depend_on_batching(small_policy) -> None:
    critic = PRMCritic.from_policy(small_policy, batch_size=2)
    with torch.no_grad():
        critic.network.head.proj.weight.normal_(0.0, 0.5)
    rows = [tuple(small_policy.tokenizer(t).input_ids) for t in ("1+2=3\n", "9", "4*5=20\n20-1=19", "x")]
    one_by_one = [critic.score_ids([r])[0] for r in rows]
    assert critic.score_ids(rows) == pytest.approx(one_by_one, abs=1e-5)


# --------------------------------------------------------------------------------------- verifier and combined
def test_verifier_critic_judges_finished_answers() -> None:
    task = make_task("countdown", {"format": "steps"})
    problem = task.problem("train", 0)
    demo = task.target_text(problem)
    right = State(0, (1,), tuple(line + "\n" for line in problem.demonstration), finished=True)
    wrong = State(0, (1,), ("1+1=2",), finished=True)
    open_ = State(0, (1,), ("1+1=2\n",))
    assert task.verify(problem, demo).correct
    assert VerifierCritic(task).score([problem], [right, wrong]) == [1.0, 0.0]
    with pytest.raises(ValueError, match="finished answers only"):
        VerifierCritic(task).score([problem], [open_])
    assert VerifierCritic(task, unfinished="zero").score([problem], [right, open_]) == [1.0, 0.0]


class Fixed:
    def __init__(self, name: str, scores: list[float]) -> None:
        self.name, self.scores, self.calls = name, scores, 0

    def score(self, problems, states):
        self.calls += 1
        return self.scores[: len(states)]


def test_combined_critic_is_a_weighted_mean_with_one_call_per_member() -> None:
    states = [State(0, (1,)), State(1, (2,)), State(1, (3,))]
    v, p, o = Fixed("value", [0.2, 0.4, 1.0]), Fixed("prm", [0.8, 0.4, 0.0]), Fixed("orm", [0.5, 1.0, 0.5])
    assert CombinedCritic([v, p, o]).score([], states) == pytest.approx([0.5, 0.6, 0.5])  # AlphaLLM: all weights 1
    assert CombinedCritic([v, p], [3.0, 1.0]).score([], states) == pytest.approx([0.35, 0.4, 0.75])
    assert (v.calls, p.calls, o.calls) == (2, 2, 1)
    budgets = [Budget(), Budget()]
    score_states(CombinedCritic([v, p, o], [1.0, 0.0, 1.0]), [], states, budgets)
    assert p.calls == 2  # weight 0: not called, not charged
    assert (budgets[0].critic_calls, budgets[0].critic_items) == (2, 2)
    assert (budgets[1].critic_calls, budgets[1].critic_items) == (2, 4)
    with pytest.raises(ValueError, match="weights"):
        CombinedCritic([v], [-1.0])
    with pytest.raises(ValueError, match="2 critics but 1 weights"):
        CombinedCritic([v, p], [1.0])


def test_a_search_charges_a_combined_critic_one_call_per_member_it_calls() -> None:
    """`score_states` (every search's critic call) charges what the critic really calls: each member of a
    combined critic, nested ones included; it used to charge one call for all (issue 26)."""
    states = [State(0, (1,)), State(1, (2,)), State(1, (3,))]
    v, p, o = Fixed("value", [0.2, 0.4, 1.0]), Fixed("prm", [0.8, 0.4, 0.0]), Fixed("orm", [0.5, 1.0, 0.5])
    budgets = [Budget(), Budget()]
    score_states(CombinedCritic([CombinedCritic([v, p]), o]), [], states, budgets)
    assert (budgets[0].critic_calls, budgets[0].critic_items) == (3, 3)
    assert (budgets[1].critic_calls, budgets[1].critic_items) == (3, 6)
    plain = [Budget(), Budget()]
    score_states(v, [], states, plain)
    assert (plain[1].critic_calls, plain[1].critic_items) == (1, 2)


# --------------------------------------------------------------------------------------- end to end
def small_recipe(run_dir: Path, model_dir: Path, **labels) -> CriticRecipe:
    return validate(CriticRecipe, {
        "run_dir": str(run_dir), "model": {"path": str(model_dir)},
        "task": {"name": "countdown", "params": {"format": "steps"}},
        "step_rule": {"kind": "newline", "max_step_tokens": 6},
        "labels": {"num_problems": 4, "samples_per_problem": 2, "rollouts_per_prefix": 2, "max_new_tokens": 12, **labels},
        "training": {"epochs": 1, "batch_size": 8},
    })


def test_run_critic_training_end_to_end(small_model_dir: Path, tmp_path: Path) -> None:
    recipe = small_recipe(tmp_path / "run", small_model_dir)
    summary = run_critic_training(recipe)
    run = tmp_path / "run"
    assert set(summary["critics"]) == {"value", "prm", "orm"}
    for kind, report in summary["critics"].items():
        assert {"precision", "recall", "ece", "accuracy", "brier"} <= report["after"].keys()
        assert report["train_examples"] > 0 and report["held_out_examples"] > 0 and report["steps"] >= 1
        critic = load_critic(run / kind)
        assert critic.kind == kind and critic.meta["step_rule"]["max_step_tokens"] == 6
        assert len((run / "logs" / kind / "metrics.jsonl").read_text().splitlines()) == report["steps"] + 1
    examples = load_labels(run / "labels.jsonl")
    assert summary["labels"]["value"]["examples"] == sum(e.kind == "value" for e in examples)
    assert summary["labels"]["value"]["problems"] == 4
    # steps were cut at 6 tokens: an untrained model rarely writes newlines
    assert max(e.depth for e in examples if e.kind == "value") >= 2
    assert json.loads((run / "summary.json").read_text()) == summary

    # the same labels again, from the file, train only the ORM
    again = small_recipe(tmp_path / "again", small_model_dir, path=str(run / "labels.jsonl"))
    again = again.model_copy(update={"critics": ["orm"]})
    summary = run_critic_training(again)
    assert set(summary["critics"]) == {"orm"} and summary["labels_from"] == str(run / "labels.jsonl")


def test_cli_critic_train(small_model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "cli"
    code = main([
        "critic", "train", str(RECIPES / "critic-countdown.yaml"),
        "--set", f"run_dir={out}", "--set", f"model.path={small_model_dir}", "--set", "critics=[value]",
        "--set", "labels.num_problems=3", "--set", "labels.samples_per_problem=2", "--set", "labels.rollouts_per_prefix=2",
        "--set", "labels.max_new_tokens=8", "--set", "training.epochs=1",
    ])
    assert code == 0
    assert set(json.loads((out / "summary.json").read_text())["critics"]) == {"value"}
    assert (out / "value" / "critic.json").is_file()
    bad = main(["critic", "train", str(RECIPES / "critic-countdown.yaml"), "--set", "critics=[vaule]"])
    assert bad == 2
