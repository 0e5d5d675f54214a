"""The task's own verifier as a critic: exact 1/0 on finished answers, for building training data.

It reads the gold answer, so it is only allowed where gold answers are known (labels, search that
generates training paths); a test-time search must use a learned critic instead. Only a finished state
has an answer to judge. What an unfinished state gets is a choice the caller makes:
`unfinished="error"` (the default) raises, because scoring one is almost always a bug in the caller;
`unfinished="zero"` scores it 0.0 (it is not yet a right answer), for searches that score every leaf
of a tree with the verifier as one member of a combined critic.
"""

from __future__ import annotations

from typing import Literal, Sequence

from selfimprove.rollout.state import State
from selfimprove.tasks.base import Problem, Task

Unfinished = Literal["error", "zero"]


class VerifierCritic:
    name = "verifier"

    def __init__(self, task: Task, *, unfinished: Unfinished = "error") -> None:
        if unfinished not in ("error", "zero"):
            raise ValueError(f"unfinished must be 'error' or 'zero', got {unfinished!r}")
        self.task = task
        self.unfinished = unfinished

    def score(self, problems: Sequence[Problem], states: Sequence[State]) -> list[float]:
        """1.0 when the task verifies the state's answer as correct, else 0.0 (see the module doc for
        unfinished states). Partial-credit verdict scores are not used: a critic's 1 means right."""
        out = []
        for state in states:
            if not state.finished:
                if self.unfinished == "error":
                    raise ValueError(
                        f"the verifier critic judges finished answers only (state of problem {state.problem_index} "
                        f"at depth {state.depth} is unfinished); use unfinished='zero' to score it 0"
                    )
                out.append(0.0)
                continue
            verdict = self.task.verify(problems[state.problem_index], state.answer)
            out.append(1.0 if verdict.correct else 0.0)
        return out
