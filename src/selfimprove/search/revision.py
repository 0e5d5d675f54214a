"""Sequential revision (SPECS §6; the layout of SCoRe's two attempts, extended to k revisions).

The model answers, then revises its own last answer `revisions` times after a fixed instruction that
never says whether the answer was right: context = prompt | y1 | instruction | y2 | instruction | y3
... Each round is one batched policy call for all problems still within budget. The final answer is
the last attempt, or, with a critic, the attempt the critic scores highest (one critic call over all
attempts at the end; ties go to the later attempt, since a revision is meant to improve on the last).
"""

from __future__ import annotations

from typing import Sequence

from pydantic import Field

from selfimprove.critics.base import Critic
from selfimprove.rollout.correct import SHORT_INSTRUCTION
from selfimprove.rollout.budget import Budget
from selfimprove.search.config import SampledSearchConfig
from selfimprove.policy.base import Sampler
from selfimprove.rollout.expand import complete, root_states, strip_eos
from selfimprove.search.result import SearchResult, make_results
from selfimprove.critics.base import score_states
from selfimprove.rollout.state import State
from selfimprove.tasks.base import Problem, Task
from selfimprove.search.registry import register_search


class RevisionConfig(SampledSearchConfig):
    """`revisions` revisions after the first answer (so revisions + 1 attempts), greedy by default."""

    revisions: int = Field(2, ge=0)
    instruction: str = SHORT_INSTRUCTION
    temperature: float = Field(0.0, ge=0.0)


def latest_best(scores: Sequence[float]) -> int:
    """The index of the highest score; ties go to the latest."""
    best = 0
    for i, s in enumerate(scores):
        if s >= scores[best]:
            best = i
    return best


@register_search("revision", RevisionConfig)
def revision_search(
    policy: Sampler,
    task: Task,
    problems: Sequence[Problem],
    config: RevisionConfig,
    critic: Critic | None = None,
    budgets: Sequence[Budget] | None = None,
) -> list[SearchResult]:
    """Answer, then revise `config.revisions` times; each attempt is kept as a standalone answer
    (the original prompt and that attempt's steps), which is what the critic and the verifier judge."""
    budgets = config.budgets(len(problems), budgets)
    rule, params, generator = config.rule(), config.sampling(), config.generator(policy)
    instruction = tuple(policy.encode_completion(config.instruction, add_eos=False))
    roots = root_states(policy, problems)
    contexts: list[State] = list(roots)  # what the next attempt of each problem continues
    attempts: list[list[State]] = [[] for _ in problems]
    for _ in range(config.revisions + 1):
        active = [i for i in range(len(problems)) if not budgets[i].exhausted]
        if not active:
            break
        done = complete(
            policy, [contexts[i] for i in active], rule, params, budgets, config.max_answer_tokens, generator=generator
        )
        for i, d in zip(active, done):
            attempts[i].append(State(i, roots[i].prompt_ids, d.steps, d.step_ids, d.finished, d.finish_reason))
            body = strip_eos(d.completion_ids, policy.eos_ids)
            contexts[i] = State(i, d.prompt_ids + tuple(body) + instruction)
    flat = [a for group in attempts for a in group]
    flat_scores = score_states(critic, problems, flat, budgets) if critic is not None else []
    chosen: list[State | None] = []
    chosen_scores: list[float | None] = []
    stats = []
    start = 0
    for problem, group in zip(problems, attempts):
        group_scores = flat_scores[start : start + len(group)]
        start += len(group)
        if not group:
            chosen.append(None)
            chosen_scores.append(None)
            stats.append({"attempts": 0, "chosen_attempt": None, "attempt_correct": []})
            continue
        i = latest_best(group_scores) if group_scores else len(group) - 1
        chosen.append(group[i])
        chosen_scores.append(group_scores[i] if group_scores else None)
        stats.append({
            "attempts": len(group),
            "chosen_attempt": i,
            # Reporting only (accuracy of each attempt, as in SCoRe's Acc@t1 / Acc@t2).
            "attempt_correct": [task.verify(problem, a.answer).correct for a in group],
        })
    return make_results(
        "revision", task, problems, chosen, budgets, [len(g) for g in attempts], scores=chosen_scores, stats=stats
    )
