"""Step-level beam search with a critic (PRM or value function; SPECS §6).

Each round every live (unfinished) beam state of every problem is expanded `expand` ways in one policy
call, all children are scored in one critic call, and each problem keeps its `beam_width` best states.
Finished states stay in the pool with the score they had, competing with new children for a slot, so
a good complete answer is never pushed out by a worse partial one. The root is expanded
`root_expand` ways (default `beam_width * expand`), so every round proposes about the same number of
children. A problem stops when its beam holds only finished states, its token budget is spent, or
after `max_steps` rounds; the answer is its best-scored finished state (else its best partial one).

Ties keep the earlier state: finished states already in the beam, then children in the order of their
parents and samples.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Sequence

from pydantic import Field

from selfimprove.critics.base import Critic
from selfimprove.eval.voting import best_index
from selfimprove.rollout.budget import Budget
from selfimprove.search.config import SampledSearchConfig
from selfimprove.policy.base import Sampler
from selfimprove.rollout.expand import propose_steps, root_states
from selfimprove.search.result import SearchResult, make_results
from selfimprove.critics.base import score_states
from selfimprove.rollout.state import State
from selfimprove.tasks.base import Problem, Task
from selfimprove.search.registry import register_search

Scored = tuple[State, float]


class BeamConfig(SampledSearchConfig):
    """Keep `beam_width` states per problem; expand each live one `expand` ways per round."""

    beam_width: int = Field(4, ge=1)
    expand: int = Field(4, ge=1)
    root_expand: int | None = Field(None, ge=1)
    max_steps: int = Field(16, ge=1)


def keep_top(pool: Sequence[Scored], width: int) -> list[Scored]:
    """The `width` best (state, score) pairs, best first; ties keep pool order (stable sort)."""
    return sorted(pool, key=lambda pair: -pair[1])[:width]


@register_search("beam", BeamConfig)
def beam_search(
    policy: Sampler,
    task: Task,
    problems: Sequence[Problem],
    config: BeamConfig,
    critic: Critic | None = None,
    budgets: Sequence[Budget] | None = None,
) -> list[SearchResult]:
    """Beam search over steps for all problems in lockstep (one policy and one critic call a round)."""
    if critic is None:
        raise ValueError("beam search needs a critic to rank partial solutions")
    budgets = config.budgets(len(problems), budgets)
    rule, params, generator = config.rule(), config.sampling(), config.generator(policy)
    root_k = config.root_expand if config.root_expand is not None else config.beam_width * config.expand
    roots = root_states(policy, problems)
    beams: list[list[Scored]] = [[] for _ in problems]
    live: list[State] = list(roots)
    scored = [0] * len(problems)
    rounds = [0] * len(problems)
    for _ in range(config.max_steps):
        if not live:
            break
        ks = [root_k if s.depth == 0 else config.expand for s in live]
        children = propose_steps(
            policy, live, ks, rule, params, budgets, max_answer_tokens=config.max_answer_tokens, generator=generator
        )
        flat = [c for group in children for c in group]
        if not flat:  # every problem with live states has spent its budget
            break
        scores = score_states(critic, problems, flat, budgets)
        kids: dict[int, list[Scored]] = defaultdict(list)
        for child, score in zip(flat, scores):
            kids[child.problem_index].append((child, score))
        for p, new in kids.items():
            finished = [pair for pair in beams[p] if pair[0].finished]
            beams[p] = keep_top(finished + new, config.beam_width)
            scored[p] += len(new)
            rounds[p] += 1
        # A problem without children this round has spent its budget: its beam stays as it is.
        live = [s for p in kids if not budgets[p].exhausted for s, _ in beams[p] if not s.finished]
    chosen: list[State | None] = []
    chosen_scores: list[float | None] = []
    stats = []
    for p, beam in enumerate(beams):
        done = [pair for pair in beam if pair[0].finished]
        pick = done or beam
        if not pick:  # never expanded (no budget at all): the empty root
            chosen.append(roots[p])
            chosen_scores.append(None)
        else:
            state, score = pick[best_index([s for _, s in pick])]
            chosen.append(state)
            chosen_scores.append(score)
        stats.append({"rounds": rounds[p], "finished_in_beam": len(done), "beam": len(beam)})
    return make_results("beam", task, problems, chosen, budgets, scored, scores=chosen_scores, stats=stats)
