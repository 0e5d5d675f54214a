"""What a search returns per problem: the chosen answer, what it cost, and how it was chosen.

`correct` is the task's verdict on the chosen answer, computed once at the end *for reporting only*:
no search reads it (or any gold answer) while choosing. `as_record()` is one JSON line of a results
file, so accuracy can be drawn against tokens, policy calls and critic calls (SPECS §6).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

from selfimprove.rollout.budget import Budget
from selfimprove.rollout.state import State
from selfimprove.tasks.base import Problem, Task


@dataclass
class SearchResult:
    problem_id: str
    search: str  # the registry name of the search that produced it
    answer: str  # the chosen answer text ("" when the budget allowed no answer at all)
    state: State | None  # the chosen state (None when there is none)
    correct: bool  # the task's verdict on `answer` (reporting only)
    reason: str  # the verdict's reason
    budget: Budget
    candidates: int  # answers or states the search weighed to choose (sampled, scored or voted on)
    score: float | None = None  # the critic's score of the chosen state, when a critic chose it
    stats: dict[str, Any] = field(default_factory=dict)  # search-specific numbers (rounds, votes, ...)

    def as_record(self) -> dict[str, Any]:
        """A JSON-serialisable dict (one line of a results JSONL)."""
        return {
            "problem_id": self.problem_id,
            "search": self.search,
            "answer": self.answer,
            "correct": self.correct,
            "reason": self.reason,
            "score": self.score,
            "candidates": self.candidates,
            "finished": bool(self.state is not None and self.state.finished),
            "steps": list(self.state.steps) if self.state is not None else [],
            **self.budget.as_dict(),
            "stats": self.stats,
            **({"messages": self.state.info["messages"]} if self.state is not None and "messages" in self.state.info else {}),
        }


def answer_key(task: Task, problem: Problem, state: State) -> str | None:
    """What a vote groups a state by: the task's key of its answer (a conversation's: its environment's)."""
    return state.info["key"] if "key" in state.info else task.answer_key(problem, state.answer)


def make_results(
    search: str,
    task: Task,
    problems: Sequence[Problem],
    chosen: Sequence[State | None],
    budgets: Sequence[Budget],
    candidates: Sequence[int],
    *,
    scores: Sequence[float | None] | None = None,
    stats: Sequence[dict[str, Any]] | None = None,
) -> list[SearchResult]:
    """Verify each chosen answer (reporting only) and bundle everything per problem."""
    out = []
    for i, (problem, state) in enumerate(zip(problems, chosen, strict=True)):
        answer = state.answer if state is not None else ""
        # A conversation was judged by its environment when it ended (its final state, not only its text).
        verdict = state.info["verdict"] if state is not None and "verdict" in state.info else task.verify(problem, answer)
        out.append(
            SearchResult(
                problem_id=problem.id,
                search=search,
                answer=answer,
                state=state,
                correct=verdict.correct,
                reason=verdict.reason,
                budget=budgets[i],
                candidates=candidates[i],
                score=None if scores is None else scores[i],
                stats={} if stats is None else dict(stats[i]),
            )
        )
    return out
