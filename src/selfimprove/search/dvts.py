"""Diverse verifier tree search (DVTS; Beeching, Tunstall and Rush, "Scaling test-time compute with open
models", 2024): `n / expand` independent subtrees per problem, each extended step by step by the
critic's favourite of `expand` proposed steps until it finishes; the answer is the best-scored leaf
(`final: best`) or a critic-weighted vote over the leaves (`final: weighted_vote`, as the blog's
"weighted best-of-N").

Why it differs from beam search of width n / expand: a beam lets the best few prefixes take every slot,
so at large n one early prefix can own the whole beam; DVTS keeps the subtrees apart, so n samples'
worth of search explores n / expand different starts.

Built on `beam.beam_search` (each subtree is a beam of width 1 over a copy of its problem), so the
step proposals, critic calls and budgets are the beam's. All subtrees of all problems share each
round's one policy call and one critic call. A problem's budget is split evenly over its subtrees; the
problem is charged what its subtrees spent (tokens and scored states summed, calls counted once per
batched round).
"""

from __future__ import annotations

from typing import Literal, Sequence

from pydantic import Field, model_validator

from selfimprove.critics.base import Critic
from selfimprove.eval.voting import best_index, weighted_vote
from selfimprove.policy.base import Sampler
from selfimprove.rollout.budget import Budget
from selfimprove.rollout.state import State
from selfimprove.search.beam import BeamConfig, beam_search
from selfimprove.search.config import SampledSearchConfig
from selfimprove.search.registry import register_search
from selfimprove.search.result import SearchResult, answer_key, make_results
from selfimprove.tasks.base import Problem, Task


class DVTSConfig(SampledSearchConfig):
    """`n` proposed steps a round per problem, `expand` per subtree (so `n / expand` subtrees)."""

    n: int = Field(16, ge=1)
    expand: int = Field(4, ge=1)
    max_steps: int = Field(16, ge=1)
    final: Literal["best", "weighted_vote"] = "best"

    @model_validator(mode="after")
    def _whole_subtrees(self) -> "DVTSConfig":
        if self.n % self.expand:
            raise ValueError(f"n ({self.n}) must be a multiple of expand ({self.expand}): n / expand subtrees")
        return self

    @property
    def subtrees(self) -> int:
        return self.n // self.expand


@register_search("dvts", DVTSConfig)
def dvts_search(
    policy: Sampler,
    task: Task,
    problems: Sequence[Problem],
    config: DVTSConfig,
    critic: Critic | None = None,
    budgets: Sequence[Budget] | None = None,
) -> list[SearchResult]:
    """DVTS for all problems in lockstep (one policy and one critic call a round)."""
    if critic is None:
        raise ValueError("DVTS needs a critic (a PRM or value function) to choose each subtree's steps")
    budgets = config.budgets(len(problems), budgets)
    trees = config.subtrees
    copies = [p for p in problems for _ in range(trees)]
    tree_budgets = [Budget(max_tokens=None if b.max_tokens is None else max(0, b.max_tokens - b.tokens) // trees)
                    for b in budgets for _ in range(trees)]
    beam = BeamConfig(**config.model_dump(include={"max_answer_tokens", "step", "seed", "temperature", "top_p", "max_steps"}),
                      beam_width=1, expand=config.expand, root_expand=config.expand)
    leaves = beam_search(policy, task, copies, beam, critic, tree_budgets)
    chosen: list[State | None] = []
    scores: list[float | None] = []
    candidates, stats = [], []
    for p, (problem, budget) in enumerate(zip(problems, budgets)):
        mine = leaves[p * trees : (p + 1) * trees]
        spent = tree_budgets[p * trees : (p + 1) * trees]
        budget.add_lockstep(spent)
        candidates.append(sum(r.candidates for r in mine))
        # scored leaves (a subtree with no budget at all has none), the finished ones when there are any
        found = [(r.state, float(r.score)) for r in mine if r.state is not None and r.score is not None]
        done = [pair for pair in found if pair[0].finished]
        stats.append({"subtrees": trees, "leaves": [r.answer for r in mine], "finished_leaves": len(done)})
        finished = done or found
        if not finished:
            chosen.append(mine[0].state)
            scores.append(None)
            continue
        leaf_scores = [score for _, score in finished]
        if config.final == "weighted_vote":
            keys = [answer_key(task, problem, state) for state, _ in finished]
            pick = finished[weighted_vote(keys, leaf_scores).index]
        else:
            pick = finished[best_index(leaf_scores)]
        chosen.append(pick[0])
        scores.append(pick[1])
    return make_results("dvts", task, problems, chosen, budgets, candidates, scores=scores, stats=stats)
