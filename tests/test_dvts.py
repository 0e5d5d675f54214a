"""Diverse verifier tree search (DVTS): independent subtrees, each kept to its best step by the critic,
on the scripted policy of `test_search_core` whose every token is known."""

from __future__ import annotations

import pytest

from selfimprove.rollout.budget import Budget
from selfimprove.search.dvts import DVTSConfig, dvts_search
from selfimprove.search.registry import SEARCHES
from test_search_core import EchoTask, ScriptedCritic, ScriptedPolicy, answer_of


def script(ctx: str, j: int) -> str:
    """The root's j-th sample writes the digit j; the second step is 7 after 1 or 3, else 9; then the end."""
    answer = answer_of(ctx)
    if answer == "":
        return f"{j}\n$"
    if answer.count("\n") == 1:
        return ("7" if answer[0] in "13" else "9") + "\n$"
    return "$"


def digits(answer: str) -> float:
    return sum(int(ch) for ch in answer if ch.isdigit()) / 20


def test_each_subtree_keeps_its_best_step_and_the_best_leaf_answers() -> None:
    policy, critic, task = ScriptedPolicy(script), ScriptedCritic(digits), EchoTask()
    # n = 6 children a round over 3 subtrees of 2: the root's samples 0..5 go 0,1 | 2,3 | 4,5.
    results = dvts_search(policy, task, task.problems("test", 2), DVTSConfig(n=6, expand=2, max_answer_tokens=16), critic)
    for r in results:
        # Subtrees keep 1, 3, 5; then 1+7, 3+7, 5+9 (0.4, 0.5, 0.7); the best leaf is 5 then 9.
        assert r.answer == "5\n9\n" and r.score == pytest.approx(0.7) and r.state.finished
        assert r.stats["leaves"] == ["1\n7\n", "3\n7\n", "5\n9\n"] and r.stats["subtrees"] == 3
        # Three rounds (step, step, end), each one batched policy call and one critic call for both problems.
        assert r.budget.policy_calls == 3 and r.budget.critic_calls == 3
        assert r.budget.critic_items == 18 and r.candidates == 18
        # Tokens: 6 x "d\n" (2 each), 6 x "7\n"/"9\n" (2), 6 end tokens (1).
        assert r.budget.tokens == 12 + 12 + 6
    # One call a round for both problems: the subtrees' identical roots go as one prompt each (n = 6), then
    # 3 subtrees x 2 problems.
    assert [len(c[0]) for c in policy.calls] == [2, 6, 6]
    assert critic.calls == [12, 12, 12]


def test_a_critic_weighted_vote_over_the_leaves() -> None:
    policy, critic, task = ScriptedPolicy(script), ScriptedCritic(digits), EchoTask()
    (r,) = dvts_search(policy, task, task.problems("test", 1), DVTSConfig(n=6, expand=2, final="weighted_vote",
                                                                             max_answer_tokens=16), critic)
    # Keys (the last number): 7 weighs 0.4 + 0.5 = 0.9 against 9's 0.7; its best-scored leaf answers.
    assert r.answer == "3\n7\n" and r.score == pytest.approx(0.5)


def test_the_token_budget_is_split_over_the_subtrees() -> None:
    policy, critic, task = ScriptedPolicy(lambda ctx, j: "ab\n$"), ScriptedCritic(lambda a: 0.5), EchoTask()
    budget = Budget(max_tokens=24)
    (r,) = dvts_search(policy, task, task.problems("test", 1), DVTSConfig(n=4, expand=2, max_answer_tokens=64), critic,
                       [budget])
    # Each of the 2 subtrees may spend 12: rounds of 2 x 3 tokens, so 2 rounds each (6, 12), then stop.
    assert r.budget is budget and budget.tokens == 24 and budget.policy_calls == 2 and not r.state.finished


def test_settings_are_checked_and_the_search_is_registered() -> None:
    assert SEARCHES.get("dvts").config is DVTSConfig
    with pytest.raises(ValueError, match="multiple of expand"):
        DVTSConfig(n=6, expand=4)
    with pytest.raises(ValueError, match="needs a critic"):
        dvts_search(ScriptedPolicy(script), EchoTask(), EchoTask().problems("test", 1), DVTSConfig(n=4, expand=2))
