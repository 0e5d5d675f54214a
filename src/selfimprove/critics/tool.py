"""The tool critic: AlphaLLM's ORM "calls tools" (sympy for MATH); ours asks the task what the prompt and
the text alone decide (`Task.tool_score`): a calculator on the written steps, Countdown's numbers and
target (both in the prompt), a program against the tests the prompt shows.

It is **gold-free**: it hands the task the prompt text and the state's answer, never the `Problem`, so
it cannot read a gold answer; a test proves it (`tests/test_tool_critic.py`). That makes it allowed at
test time, unlike the verifier critic. Scores are probabilities: 1 or 0 where the tools decide, 0 for a
step they refute, `UNDECIDED` (0.5) where they cannot tell; combined with learned critics by
`CombinedCritic` it demotes what the tools refute and leaves the ranking of the rest to them.
"""

from __future__ import annotations

from typing import Sequence

from selfimprove.rollout.state import State
from selfimprove.tasks.base import Problem, Task


class ToolCritic:
    name = "tool"
    uses_gold_answers = False

    def __init__(self, task: Task) -> None:
        if task.tool_score("", "", True) is None:
            raise ValueError(f"task {task.name!r} has no gold-free tool check (Task.tool_score); use a learned critic")
        self.task = task

    def score(self, problems: Sequence[Problem], states: Sequence[State]) -> list[float]:
        out = []
        for state in states:
            prompt = problems[state.problem_index].prompt
            value = self.task.tool_score(prompt, state.answer, state.finished)
            out.append(0.5 if value is None else min(1.0, max(0.0, float(value))))
        return out
