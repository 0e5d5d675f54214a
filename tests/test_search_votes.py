"""Votes on hand-made answers (counts, weights, documented tie-breaks) and the answer keys they use."""

from __future__ import annotations

import pytest

from selfimprove.search.vote import majority_vote, weighted_vote
from selfimprove.tasks import make_task


def test_majority_counts_keys_and_chooses_the_first_answer_of_the_winner() -> None:
    vote = majority_vote(["7", "5", "5", None, "7", "5"])
    assert (vote.key, vote.index) == ("5", 1)
    assert vote.votes == {"7": 2, "5": 3} and vote.tally == {"7": 2.0, "5": 3.0}


def test_majority_tie_goes_to_the_key_sampled_first() -> None:
    assert majority_vote(["b", "a", "a", "b"]).key == "b"
    assert majority_vote(["a", "b", "b", "a"]).key == "a"
    assert majority_vote([None, "x", "y"]).index == 1


def test_no_key_at_all_chooses_the_first_answer() -> None:
    vote = majority_vote([None, None])
    assert (vote.key, vote.index, vote.votes) == (None, 0, {})
    assert weighted_vote([None], [0.9]).index == 0
    with pytest.raises(ValueError):
        majority_vote([])


def test_weighted_sums_scores_per_key_and_picks_its_best_answer() -> None:
    # "7" has fewer votes but more total weight; its best-scored answer is the second "7".
    vote = weighted_vote(["5", "7", "5", "7", "5"], [0.2, 0.5, 0.3, 0.9, 0.1])
    assert vote.key == "7" and vote.index == 3
    assert vote.tally == {"5": pytest.approx(0.6), "7": pytest.approx(1.4)}


def test_weighted_ties_go_to_more_votes_then_to_the_key_sampled_first() -> None:
    # Equal sums (0.1 + 0.2 + 0.3 == 0.6 exactly with fsum): the key with more votes wins.
    assert weighted_vote(["a", "b", "b", "b"], [0.6, 0.1, 0.2, 0.3]).key == "b"
    # Equal sums and votes: the key sampled first; within it, equal scores go to the earliest answer.
    vote = weighted_vote(["b", "a", "b", "a"], [0.5, 0.5, 0.5, 0.5])
    assert (vote.key, vote.index) == ("b", 0)
    with pytest.raises(ValueError):
        weighted_vote(["a"], [0.1, 0.2])


def test_weighted_and_majority_can_disagree() -> None:
    keys = ["1", "1", "1", "2"]
    assert majority_vote(keys).key == "1"
    assert weighted_vote(keys, [0.1, 0.1, 0.1, 0.95]).key == "2"


# ------------------------------------------------------------------------------------ answer keys
def test_default_key_is_the_final_answer_with_numbers_normalised() -> None:
    task = make_task("chain")
    problem = task.problems("test", 1)[0]
    key = lambda text: task.answer_key(problem, text)  # noqa: E731
    assert key("so the answer is 1,000.0 dollars") == key("#### 1000") == key("\\boxed{1000}") == "1000"
    assert key("18 dollars, since 9*2=18") == "18"
    assert key("\\boxed{x + 1}") == "x + 1" and key("\\boxed{x+1}") != key("\\boxed{x+2}")
    assert key("  no   number here ") == "no number here"
    assert key("") is None and key("   ") is None


def test_countdown_keys_by_the_operations_not_the_final_value() -> None:
    steps = make_task("countdown", {"format": "steps"})
    p = steps.problems("test", 1)[0]
    key = lambda text: steps.answer_key(p, text)  # noqa: E731
    assert key("20-9=11\n11*2=22") == key("20 - 9 = 11\n2*11=22\n") == "2*11=22 ; 20-9=11"
    assert key("1+2=3\n4+5=9\n3*9=27") == key("4+5=9\n2+1=3\n9*3=27")  # independent operations, other order
    assert key("20-9=11\n11*2=22") != key("9+2=11\n11*2=22")  # same value, different computation
    assert key("9-20=x\n") == "9-20=x" and key("") is None
    expression = make_task("countdown")
    q = expression.problems("test", 1)[0]
    # An expression keys like the same computation written in steps; a claimed result is ignored.
    assert expression.answer_key(q, "(20-9)*2") == expression.answer_key(q, "2*(20-9) = 22") == key("20-9=11\n11*2=22")
    assert expression.answer_key(q, "(20-9)*2\nextra line") == expression.answer_key(q, "(20-9)*2")
    assert expression.answer_key(q, "(1+2)+3") != expression.answer_key(q, "1+(2+3)")
    assert expression.answer_key(q, "7") == "7" and expression.answer_key(q, "(1/0)") == "(1/0)"
