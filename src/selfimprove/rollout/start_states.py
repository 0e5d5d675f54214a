"""R^3's start states (Xi et al. 2024; SPECS §4): exploration that starts part-way through a demonstration.

A problem's demonstration is a list of steps (one per line). Start state s_k is the prompt plus the
first k steps, for k = 0..n-1, so at least one step is left to write. An episode from s_k is the prompt
(context), the demonstration prefix (context: a segment that is never trained) and the policy's
continuation (trained); the verifier judges prefix + continuation as one answer, so a continuation is
rewarded for finishing the demonstration's solution correctly from where it was dropped. The answer
must be the continuation's own: one that writes no answer (nothing, or no number on a numeric task)
scores 0, since reading the final number from the text would otherwise take the prefix's last
number (paid as a partial reward, or as the answer itself where the demonstration's last step only
restates it, as GSM8K's `#### N` does).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from selfimprove.policy.base import Sampler, SamplingParams
from selfimprove.rollout.episode import Episode, Segment
from selfimprove.tasks.answers import extract_answer
from selfimprove.tasks.base import Problem, Task, Verdict

__all__ = ["StartState", "prefix_text", "start_state_episodes", "start_states", "wrote_answer"]


@dataclass(frozen=True)
class StartState:
    problem: Problem
    k: int  # demonstration steps given as context (0: the bare prompt)

    @property
    def steps(self) -> int:
        """Steps in the problem's demonstration."""
        return len(self.problem.demonstration or ())

    @property
    def left(self) -> int:
        """Steps left to write from this state."""
        return self.steps - self.k


def prefix_text(problem: Problem, k: int) -> str:
    """The first k demonstration steps, each ending in a newline (empty for k = 0)."""
    steps = problem.demonstration or ()
    if not 0 <= k < max(1, len(steps)):
        raise ValueError(f"start state k={k} needs 0 <= k < {len(steps)} (a step must be left) for {problem.id}")
    return "".join(step + "\n" for step in steps[:k])


def start_states(problem: Problem) -> list[StartState]:
    """s_0 .. s_{n-1} of a problem with a demonstration of n steps (just s_0 without one)."""
    n = len(problem.demonstration or ())
    return [StartState(problem, k) for k in range(max(1, n))]


def wrote_answer(task: Task, continuation: str) -> bool:
    """Whether a continuation gives an answer of its own: any text, and on a numeric task a final
    answer `answers.extract_answer` finds in it (`#### N`, `\\boxed{}`, "the answer is", a number)."""
    if not continuation.strip():
        return False
    return not task.has_numeric_answers() or extract_answer(continuation) is not None


def start_state_episodes(
    sampler: Sampler, task: Task, states: Sequence[StartState], params: SamplingParams, *, group_offset: int = 0
) -> list[Episode]:
    """`params.n` continuations of each start state (one group per state), judged with their prefix."""
    prompts = [sampler.encode_prompt(s.problem.prompt) for s in states]
    prefixes = [prefix_text(s.problem, s.k) for s in states]
    prefix_ids = [sampler.encode_completion(p, add_eos=False) if p else [] for p in prefixes]
    completions = sampler.generate_ids([p + q for p, q in zip(prompts, prefix_ids)], params)
    episodes = []
    for c in completions:
        i = c.prompt_index
        state, text = states[i], prefixes[i] + c.text
        verdict = task.verify(state.problem, text) if wrote_answer(task, c.text) else Verdict.wrong(
            "no answer after the given steps")
        segments = [Segment("prompt", list(prompts[i]))]
        if prefix_ids[i]:
            segments.append(Segment("prefix", list(prefix_ids[i]), text=prefixes[i]))
        segments.append(Segment("completion", list(c.token_ids), trainable=True, reward=verdict.score,
                                logprobs=list(c.logprobs), text=c.text))
        episodes.append(Episode(segments, group=group_offset + i, problem_id=state.problem.id,
                                info={"correct": verdict.correct, "reason": verdict.reason, "k": state.k,
                                      "left": state.left, "finish_reason": c.finish_reason}))
    return episodes
