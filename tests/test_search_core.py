"""Search core: step proposals and completions in lockstep, exact token accounting, budgets, and the
searches (best-of-N, greedy, votes, beam, revision) on a scripted policy whose every token is known."""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Callable, Sequence

import pytest
import torch

from selfimprove.policy.base import Completion, SamplingParams
from selfimprove.search.beam import BeamConfig, beam_search
from selfimprove.search.best_of_n import BestOfNConfig, GreedyConfig, best_of_n_search, greedy_search
from selfimprove.rollout.budget import Budget
from selfimprove.rollout.expand import complete, propose_steps, root_states, split_ids
from selfimprove.search.registry import SEARCHES, make_search_config, run_search
from selfimprove.search.revision import RevisionConfig, revision_search
from selfimprove.rollout.state import State, StepRule
from selfimprove.search.vote import VoteConfig, majority_vote_search, weighted_vote_search
from selfimprove.tasks import make_task
from selfimprove.tasks.base import Problem, Task, Verdict

EOS = 1
SAMPLE = SamplingParams(temperature=1.0)


class ScriptedPolicy:
    """A character-level stand-in for HFPolicy: `script(context, j)` is the j-th continuation of a
    context (`$` = end token). It honours stop strings and max_new_tokens like the real decoder and
    records every call."""

    eos_ids = [EOS]

    def __init__(self, script: Callable[[str, int], str]) -> None:
        self.script = script
        self.calls: list[tuple[list[str], SamplingParams]] = []
        self.seen: dict[str, int] = defaultdict(int)

    def encode_prompt(self, text: str) -> list[int]:
        return [ord(c) + 3 for c in text]

    def encode_completion(self, text: str, *, add_eos: bool = True) -> list[int]:
        return self.encode_prompt(text) + ([EOS] if add_eos else [])

    def detokenize(self, ids: Sequence[int]) -> str:
        return "".join(chr(i - 3) for i in ids if i != EOS)

    def make_generator(self, seed: int) -> torch.Generator:
        return torch.Generator().manual_seed(seed)

    def generate_ids(self, prompt_ids, params: SamplingParams, *, generator=None) -> list[Completion]:
        contexts = [self.detokenize(p) for p in prompt_ids]
        self.calls.append((contexts, params))
        out = []
        for p, (ids, context) in enumerate(zip(prompt_ids, contexts)):
            for _ in range(params.n):
                text = self.script(context, self.seen[context])
                self.seen[context] += 1
                assert text.endswith("$"), "scripts end with the end token"
                tokens, reason = [], "length"
                for ch in text:
                    if len(tokens) == params.max_new_tokens:
                        break
                    tokens.append(EOS if ch == "$" else ord(ch) + 3)
                    if ch == "$":
                        reason = "eos"
                        break
                    if any(s in self.detokenize(tokens) for s in params.stop):
                        reason = "stop"
                        break
                out.append(Completion(p, list(ids), tokens, self.detokenize(tokens), [0.0] * len(tokens), reason))
        return out


class ScriptedCritic:
    """Scores a state by a function of its answer text; records each call's size."""

    name = "scripted"

    def __init__(self, fn: Callable[[str], float]) -> None:
        self.fn = fn
        self.calls: list[int] = []

    def score(self, problems: Sequence[Problem], states: Sequence[State]) -> list[float]:
        self.calls.append(len(states))
        return [self.fn(s.answer) for s in states]


class EchoTask(Task):
    """Problems `Q<i>:` whose right answer is the number i (keyed as votes key it)."""

    name = "echo"

    def problem(self, split, index: int) -> Problem:
        return Problem(f"echo-{index}", f"Q{index}:", answer=str(index))

    def verify(self, problem: Problem, text: str) -> Verdict:
        return Verdict.right() if self.answer_key(problem, text) == problem.answer else Verdict.wrong("different")


def answer_of(context: str) -> str:
    """What follows the prompt `Q<i>:` in a context."""
    return context.partition(":")[2]


def charged(children: Sequence[State], parents_tokens: int = 0) -> int:
    """Tokens a call generated, from its children: new step tokens plus what each step cut dropped."""
    return sum(len(c.step_ids[-1]) + c.info["discarded_tokens"] for c in children) - parents_tokens


# ------------------------------------------------------------------------------------ propose_steps
def test_steps_end_at_the_newline_and_every_generated_token_is_charged() -> None:
    policy = ScriptedPolicy(lambda ctx, j: f"s{j}\nrest$")
    roots = root_states(policy, EchoTask().problems("test", 2))
    budgets = [Budget(), Budget()]
    children = propose_steps(policy, roots, 3, StepRule(), SAMPLE, budgets)
    assert [[c.steps for c in cs] for cs in children] == [[("s0\n",), ("s1\n",), ("s2\n",)]] * 2
    assert all(not c.finished and c.step_ids[0][-1] == ord("\n") + 3 for cs in children for c in cs)
    for p, cs in enumerate(children):
        assert budgets[p].tokens == charged(cs) == 9 and budgets[p].policy_calls == 1
    assert len(policy.calls) == 1 and policy.calls[0][1].stop == ("\n",)


def test_tokens_past_the_step_end_are_dropped_but_charged() -> None:
    policy = ScriptedPolicy(lambda ctx, j: "ab;cd$")
    budgets = [Budget()]
    (children,) = propose_steps(policy, root_states(policy, EchoTask().problems("test", 1)), 2, StepRule("pattern", ";"), SAMPLE, budgets)
    assert [c.steps for c in children] == [("ab;",), ("ab;",)]
    assert [c.info["discarded_tokens"] for c in children] == [3, 3]  # c, d and the end token
    assert not any(c.finished for c in children)
    assert budgets[0].tokens == charged(children) == 12


def test_an_end_token_finishes_the_child_and_stays_in_its_ids() -> None:
    policy = ScriptedPolicy(lambda ctx, j: "x=1$")
    (children,) = propose_steps(policy, root_states(policy, EchoTask().problems("test", 1)), 1, StepRule(), SAMPLE, [Budget()])
    (child,) = children
    assert child.finished and child.finish_reason == "eos"
    assert child.steps == ("x=1",) and child.step_ids[0][-1] == EOS and child.answer == "x=1"


def test_the_answer_cap_cuts_and_finishes_the_child() -> None:
    policy = ScriptedPolicy(lambda ctx, j: "abcdefgh\n$")
    root = root_states(policy, EchoTask().problems("test", 1))[0]
    state = root.extend("xyzw", policy.encode_completion("xyzw", add_eos=False))
    budgets = [Budget()]
    (children,) = propose_steps(policy, [state], 1, StepRule(), SAMPLE, budgets, max_answer_tokens=6)
    (child,) = children
    assert child.steps[-1] == "ab" and child.finished and child.finish_reason == "length"
    assert policy.calls[0][1].max_new_tokens == 2  # never asks for more than the cap leaves
    assert budgets[0].tokens == charged(children)


def test_equation_rule_goes_on_past_a_newline_without_an_equation() -> None:
    policy = ScriptedPolicy(lambda ctx, j: "so\n1+2=3\nnext$" if ctx.endswith(":") else "1+2=3\nnext$")
    budgets = [Budget()]
    (children,) = propose_steps(policy, root_states(policy, EchoTask().problems("test", 1)), 1, StepRule("equation"), SAMPLE, budgets)
    assert children[0].steps == ("so\n1+2=3\n",)
    assert len(policy.calls) == 2 and budgets[0].policy_calls == 2  # one follow-up call for the false stop
    assert budgets[0].tokens == charged(children) == len("so\n1+2=3\n")


def test_one_call_for_many_problems_and_identical_contexts_merged() -> None:
    policy = ScriptedPolicy(lambda ctx, j: f"{j}\n$")
    roots = root_states(policy, EchoTask().problems("test", 2))
    states = [roots[0], roots[0], roots[1]]  # two identical contexts need 4 samples, the other 2
    budgets = [Budget(), Budget()]
    children = propose_steps(policy, states, 2, StepRule(), SAMPLE, budgets)
    assert len(policy.calls) == 1
    contexts, params = policy.calls[0]
    assert (sorted(contexts), params.n) == (["Q0:", "Q0:", "Q1:"], 2)  # gcd(4, 2) = 2 samples per prompt
    assert [len(cs) for cs in children] == [2, 2, 2]
    assert {c.steps[0] for c in children[0] + children[1]} == {"0\n", "1\n", "2\n", "3\n"}  # no sample reused
    assert [b.policy_calls for b in budgets] == [1, 1]


def test_branching_per_state_and_states_that_cannot_grow() -> None:
    policy = ScriptedPolicy(lambda ctx, j: "a\n$")
    roots = root_states(policy, EchoTask().problems("test", 3))
    done = roots[0].extend("x", [EOS], finished=True, finish_reason="eos")
    budgets = [Budget(), Budget(), Budget(max_tokens=5, tokens=5)]
    children = propose_steps(policy, [done, roots[1], roots[1], roots[2]], [4, 1, 3, 2], StepRule(), SAMPLE, budgets)
    assert [len(cs) for cs in children] == [0, 1, 3, 0]  # finished, adaptive 1 and 3, exhausted budget
    assert budgets[0].policy_calls == 0 and budgets[2].policy_calls == 0 and budgets[2].tokens == 5
    assert propose_steps(policy, [done], 2, StepRule(), SAMPLE, budgets) == [[]]
    assert len(policy.calls) == 1  # nothing to expand: no call at all


# ------------------------------------------------------------------------------------ complete
def test_complete_finishes_states_split_into_steps() -> None:
    policy = ScriptedPolicy(lambda ctx, j: "1+2=3\n3*4=12$" if j == 0 else "1+2=3\n3*4=12\n12-1=11\n11+1=12\nmore$")
    roots = root_states(policy, EchoTask().problems("test", 1))
    budgets = [Budget()]
    a, b = complete(policy, [roots[0], roots[0]], StepRule(), SAMPLE, budgets, max_answer_tokens=20)
    assert a.steps == ("1+2=3\n", "3*4=12") and a.finished and a.finish_reason == "eos" and a.step_ids[-1][-1] == EOS
    assert b.finished and b.finish_reason == "length" and b.num_completion_tokens == 20
    assert b.steps == ("1+2=3\n", "3*4=12\n", "12-1=11")  # 6 + 7 + 7 = 20 tokens: cut inside the step
    assert len(policy.calls) == 1 and policy.calls[0][1].n == 2  # one prompt, its prefix computed once
    assert budgets[0].tokens == a.num_completion_tokens + b.num_completion_tokens + b.info["discarded_tokens"]


def test_split_ids_rounds_a_step_end_up_to_the_token_end() -> None:
    class Pairs(ScriptedPolicy):
        """Tokens of two characters each: a newline can fall inside a token."""

        def detokenize(self, ids: Sequence[int]) -> str:
            return "".join(chr((i >> 8) - 3) + chr((i & 255) - 3) for i in ids if i != EOS)

    policy = Pairs(lambda ctx, j: "$")
    ids = [((ord(a) + 3) << 8) | (ord(b) + 3) for a, b in ("ab", "\nc", "d\n")] + [EOS]
    pieces = split_ids(policy, ids, StepRule())
    assert [policy.detokenize(p) for p in pieces] == ["ab\nc", "d\n"] and pieces[-1][-1] == EOS


# ------------------------------------------------------------------------------------ real policy
def test_real_policy_proposes_newline_steps_for_countdown_in_one_call(small_policy) -> None:
    task = make_task("countdown", {"format": "steps"})
    problems = task.problems("test", 4)
    newline = small_policy.tokenizer.convert_tokens_to_ids("\n")
    bias = torch.zeros(len(small_policy.tokenizer))
    bias[newline] = 4.0  # the untrained model writes newlines often enough to end most steps
    hook = small_policy.model.lm_head.register_forward_hook(lambda m, i, out: out + bias)
    calls = []
    real = small_policy.generate_ids
    small_policy.generate_ids = lambda *a, **k: calls.append(1) or real(*a, **k)
    try:
        budgets = [Budget() for _ in problems]
        rule = StepRule(max_step_tokens=12)
        children = propose_steps(small_policy, root_states(small_policy, problems), 3, rule, SAMPLE, budgets,
                                 generator=torch.Generator().manual_seed(0))
    finally:
        hook.remove()
    assert len(calls) == 1 and all(b.policy_calls == 1 for b in budgets)
    flat = [c for cs in children for c in cs]
    assert len(flat) == 12 and sum(c.steps[0].endswith("\n") for c in flat) >= 6
    for c in flat:
        step, ids = c.steps[0], c.step_ids[0]
        assert step == small_policy.detokenize(ids) and "\n" not in step[:-1]
        assert step.endswith("\n") or c.finished or len(ids) == rule.max_step_tokens
    for p, cs in enumerate(children):
        assert budgets[p].tokens == charged(cs)


# ------------------------------------------------------------------------------------ searches
def test_beam_keeps_the_top_k_each_round_and_batches_every_call() -> None:
    # Sample j of any context writes the digit j; two digits make an answer. Score = sum of digits.
    policy = ScriptedPolicy(lambda ctx, j: "$" if answer_of(ctx).count("\n") == 2 else f"{j}\n$")
    critic = ScriptedCritic(lambda a: sum(int(ch) for ch in a if ch.isdigit()) / 10)
    task = EchoTask()
    config = BeamConfig(beam_width=2, expand=3, root_expand=3, max_answer_tokens=16)
    results = beam_search(policy, task, task.problems("test", 2), config, critic)
    for r in results:
        # Round 1 keeps "2" and "1"; round 2's children of "2" win (2+2, then 2+1 over the tie 1+2).
        assert r.state.steps == ("2\n", "2\n", "") and r.answer == "2\n2\n" and r.state.finished
        assert r.stats["rounds"] == 3 and r.candidates == 3 + 6 + 6
        assert r.budget.policy_calls == 3 and r.budget.critic_calls == 3 and r.budget.critic_items == 15
    assert [len(c[0]) for c in policy.calls] == [2, 4, 4]  # both problems in every call
    assert critic.calls == [6, 12, 12]
    second_round = {ctx for ctx in policy.calls[1][0]}
    assert second_round == {"Q0:2\n", "Q0:1\n", "Q1:2\n", "Q1:1\n"}
    assert [sorted(ctx for ctx in policy.calls[2][0] if ctx.startswith("Q0"))] == [["Q0:2\n1\n", "Q0:2\n2\n"]]


@pytest.mark.parametrize("last_score, expected", [(0.95, "b\nc\nc\nZ"), (0.3, "A")])
def test_beam_keeps_a_finished_answer_against_worse_partial_ones(last_score: float, expected: str) -> None:
    # The root's first sample finishes at once ("A", score 0.9) and must survive three rounds of
    # partial paths scored lower; the long path's own answer then wins or loses against it.
    def script(ctx: str, j: int) -> str:
        answer = answer_of(ctx)
        if answer == "":
            return "A$" if j == 0 else "b\n$"
        return "c\n$" if answer.count("\n") < 3 else "Z$"

    scores = {"A": 0.9, "b\n": 0.5, "b\nc\n": 0.6, "b\nc\nc\n": 0.7, "b\nc\nc\nZ": last_score}
    critic = ScriptedCritic(lambda a: scores[a])
    policy = ScriptedPolicy(script)
    task = EchoTask()
    (result,) = beam_search(policy, task, task.problems("test", 1), BeamConfig(beam_width=2, expand=1, root_expand=2), critic)
    assert result.answer == expected and result.score == scores[expected] and result.stats["finished_in_beam"] == 2
    assert critic.calls == [2, 1, 1, 1]  # finished states are never scored again


def test_token_budget_stops_beam_search() -> None:
    policy = ScriptedPolicy(lambda ctx, j: "ab\n$")  # never finishes: 3 tokens a step
    critic = ScriptedCritic(lambda a: 0.5)
    task = EchoTask()
    config = BeamConfig(beam_width=2, expand=2, root_expand=2, max_tokens=20, max_answer_tokens=64)
    (result,) = beam_search(policy, task, task.problems("test", 1), config, critic)
    # Rounds spend 6, 12, ... tokens: after 6 + 12 = 18 < 20 one more round runs (18 + 12 = 30), then stop.
    assert result.budget.tokens == 30 and result.budget.policy_calls == 3 and result.stats["rounds"] == 3
    assert not result.state.finished and result.answer == "ab\nab\nab\n"
    unlimited = beam_search(ScriptedPolicy(lambda ctx, j: "ab\n$"), task, task.problems("test", 1),
                            config.model_copy(update={"max_tokens": None, "max_steps": 5}), critic)[0]
    assert unlimited.budget.tokens == 6 + 4 * 12


def test_best_of_n_picks_the_critics_favourite_in_one_policy_and_one_critic_call() -> None:
    policy = ScriptedPolicy(lambda ctx, j: ["7$", "9$", "3$", "9$"][j])
    critic = ScriptedCritic(lambda a: int(a) / 10)
    task = EchoTask()
    problems = task.problems("test", 10)[7:10]  # answers 7, 8, 9
    results = best_of_n_search(policy, task, problems, BestOfNConfig(n=4), critic)
    assert [r.answer for r in results] == ["9", "9", "9"] and [r.stats["chosen_index"] for r in results] == [1, 1, 1]
    assert [r.correct for r in results] == [False, False, True]
    assert len(policy.calls) == 1 and critic.calls == [12]
    assert all(r.budget.tokens == 8 and r.budget.critic_calls == 1 and r.candidates == 4 for r in results)
    with pytest.raises(ValueError, match="needs a critic"):
        best_of_n_search(policy, task, problems, BestOfNConfig(n=2))


def test_token_budget_stops_best_of_n_early() -> None:
    policy = ScriptedPolicy(lambda ctx, j: "123$")
    task = EchoTask()
    config = BestOfNConfig(n=8, samples_per_call=2, max_tokens=10)
    (result,) = best_of_n_search(policy, task, task.problems("test", 1), config, ScriptedCritic(lambda a: 0.5))
    assert result.candidates == 4 and result.budget.tokens == 16 and result.budget.policy_calls == 2


def test_greedy_is_one_sample_at_temperature_zero() -> None:
    policy = ScriptedPolicy(lambda ctx, j: "1$")
    task = EchoTask()
    results = greedy_search(policy, task, task.problems("test", 2), GreedyConfig(max_answer_tokens=5))
    assert [r.correct for r in results] == [False, True] and [r.search for r in results] == ["greedy"] * 2
    ((contexts, params),) = policy.calls
    assert params.temperature == 0.0 and params.n == 1 and params.max_new_tokens == 5 and len(contexts) == 2


def test_votes_pick_the_most_frequent_or_the_heaviest_answer() -> None:
    policy = ScriptedPolicy(lambda ctx, j: ["answer: 3$", "5$", "3.0$", "5$", "5$"][j])
    task = EchoTask()
    problems = task.problems("test", 6)[3:4]
    (majority,) = majority_vote_search(policy, task, problems, VoteConfig(n=5))
    assert majority.answer == "5" and majority.stats["votes"] == 3 and majority.stats["distinct_answers"] == 2
    policy = ScriptedPolicy(lambda ctx, j: ["answer: 3$", "5$", "3.0$", "5$", "5$"][j])
    critic = ScriptedCritic(lambda a: 0.9 if "3" in a else 0.2)
    (weighted,) = weighted_vote_search(policy, task, problems, VoteConfig(n=5), critic)
    assert weighted.stats["key"] == "3" and weighted.correct and weighted.answer == "answer: 3"
    assert weighted.stats["weight"] == pytest.approx(1.8) and critic.calls == [5]
    with pytest.raises(ValueError, match="needs a critic"):
        weighted_vote_search(policy, task, problems, VoteConfig(n=5))


def test_revision_continues_prompt_answer_instruction_answer() -> None:
    policy = ScriptedPolicy(lambda ctx, j: f"try{ctx.count('again')}$")
    task = EchoTask()
    config = RevisionConfig(revisions=2, instruction=" again:")
    (plain,) = revision_search(policy, task, task.problems("test", 1), config)
    assert [c[0] for c in policy.calls] == [["Q0:"], ["Q0:try0 again:"], ["Q0:try0 again:try1 again:"]]
    assert plain.answer == "try2" and plain.stats["attempts"] == 3 and plain.stats["chosen_attempt"] == 2
    assert plain.state.prompt_ids == tuple(policy.encode_prompt("Q0:"))  # judged as a standalone answer
    critic = ScriptedCritic(lambda a: {"try0": 0.8, "try1": 0.8, "try2": 0.1}[a])
    (judged,) = revision_search(ScriptedPolicy(policy.script), task, task.problems("test", 1), config, critic)
    assert judged.answer == "try1" and judged.budget.critic_calls == 1  # tie 0.8 / 0.8 goes to the later


# ------------------------------------------------------------------------------------ registry, records
def test_every_search_is_registered_and_built_from_plain_settings() -> None:
    assert {"greedy", "best_of_n", "majority_vote", "weighted_vote", "beam", "revision"} <= set(SEARCHES.names())
    assert make_search_config("beam", {"beam_width": 3, "step": {"kind": "equation"}}).rule().kind == "equation"
    with pytest.raises(ValueError, match="beam_widht"):
        make_search_config("beam", {"beam_widht": 3})
    with pytest.raises(KeyError, match="unknown search"):
        make_search_config("nope")
    policy = ScriptedPolicy(lambda ctx, j: "0$")
    task = EchoTask()
    (result,) = run_search("majority_vote", policy, task, task.problems("test", 1), {"n": 3})
    record = json.loads(json.dumps(result.as_record()))
    assert record["correct"] and record["tokens"] == 6 and record["policy_calls"] == 1 and record["search"] == "majority_vote"
    assert record["steps"] == ["0"] and record["finished"] and record["candidates"] == 3


def test_every_search_runs_on_the_real_policy_with_the_verifier(small_policy) -> None:
    from selfimprove.critics.verifier import VerifierCritic

    task = make_task("countdown", {"format": "steps"})
    problems = task.problems("test", 2)
    critic = VerifierCritic(task, unfinished="zero")
    settings = {"max_answer_tokens": 12, "step": {"max_step_tokens": 6}}
    extra = {"best_of_n": {"n": 3}, "majority_vote": {"n": 3}, "weighted_vote": {"n": 3}, "revision": {"revisions": 1},
             "beam": {"beam_width": 2, "expand": 2, "max_steps": 3}}
    for name in ("greedy", "best_of_n", "majority_vote", "weighted_vote", "beam", "revision"):
        results = run_search(name, small_policy, task, problems, {**settings, **extra.get(name, {})}, critic)
        assert [r.problem_id for r in results] == [p.id for p in problems]
        for r in results:
            assert r.search == name and r.budget.tokens > 0 and r.budget.policy_calls >= 1
            assert r.answer == "".join(r.state.steps) and r.state.num_completion_tokens <= 12
            assert r.correct == task.verify(problems[r.state.problem_index], r.answer).correct
            json.dumps(r.as_record())


def test_a_bad_step_pattern_is_a_config_error_naming_the_field() -> None:
    from selfimprove.rollout.state import StepRuleConfig

    with pytest.raises(ValueError, match="not a regular expression"):
        StepRuleConfig(kind="pattern", pattern="(")

