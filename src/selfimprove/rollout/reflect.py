"""Reflect-retry episodes (Reflect, Retry, Reward; SPECS §3).

A first attempt fails -> a fixed feedback message says only that it failed (never why, never the
answer) -> the model writes a self-reflection -> it retries with the reflection in context -> the
verifier checks the retry. One episode per reflection, `params.n` reflections per failed attempt (one
group per failure). Only the reflection is trainable: prompt, attempt, feedback, retry marker and
retry tokens are context, so they get no gradient whatever the advantages. The reward is 1 if the
retry is right, else 0.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any, Sequence

from selfimprove.policy.base import Completion, SamplingParams
from selfimprove.policy.base import Sampler
from selfimprove.tasks.base import Problem, Task, Verdict

if TYPE_CHECKING:
    from selfimprove.rollout.episode import Episode

# What the verifier tells the model: only that the attempt failed. A short one the character-level tiny
# model can learn as a layout, and a longer paper-like one (the paper's prompts are not public).
SHORT_FEEDBACK = "\nwrong. why:"
PAPER_FEEDBACK = (
    "\n\nYou tried performing the task, but failed to generate the correct answer. "
    "Reflect on what went wrong and write a short explanation that will help you do better next time.\n"
)
FAILED_FEEDBACK = SHORT_FEEDBACK

# Self-refine (no verifier): a neutral review request after *every* first attempt, right or wrong.
REVIEW_FEEDBACK = "\nreview:"

# What comes between the reflection and the retry.
SHORT_RETRY = "\nretry:"
PAPER_RETRY = "\n\nNow try the task again, using your reflection.\n"
RETRY_PROMPT = SHORT_RETRY


# A reflection (or a self-refine critique) is one line: the retry marker starts the next line. The
# warm-up teaches exactly that layout (reflection, then "\nretry:"), so generation stops at the newline
# and the newline is dropped before the marker is appended.
REFLECTION_END = "\n"


def line_params(params: SamplingParams, end: str | None = REFLECTION_END) -> SamplingParams:
    """`params` that also stop at the end of a reflection line."""
    return params if end is None or end in params.stop else replace(params, stop=tuple(params.stop) + (end,))


def reflection_body(policy: Sampler, c: Completion) -> tuple[list[int], list[float]]:
    """A reflection's tokens and log-probs without what ended it (the end token, or the stop string):
    the longest run of its tokens whose text is its (stop-cut) text."""
    if c.finish_reason != "stop":
        return c.without_eos(policy.eos_ids)
    ids, logprobs = list(c.token_ids), list(c.logprobs)
    cut = len(ids)
    while cut > 0 and not c.text.startswith(policy.detokenize(ids[:cut])):
        cut -= 1
    return ids[:cut], logprobs[:cut]


def _one(params: SamplingParams, temperature: float | None = None) -> SamplingParams:
    return replace(params, n=1, temperature=params.temperature if temperature is None else temperature)


def first_attempts(policy: Sampler, task: Task, problems: Sequence[Problem], params: SamplingParams) -> list[Completion]:
    """One attempt per problem (`params.n` is ignored): completion i answers `problems[i]`."""
    return policy.generate([p.prompt for p in problems], _one(params))


def failures(
    policy: Sampler, task: Task, problems: Sequence[Problem], params: SamplingParams, samples: int
) -> list[tuple[Problem, Completion]]:
    """The failure set: sample `samples` answers per problem, keep each problem with at least one wrong
    answer, paired with its first wrong answer (re-indexed so `prompt_index` is its position here).

    SPECS §3 leaves "the model fails" open; we keep a problem when any sample fails, so a problem the
    model solves only sometimes still teaches reflection.
    """
    return sample_failures(policy, task, problems, params, samples)[0]


def sample_attempts(
    policy: Sampler, task: Task, problems: Sequence[Problem], params: SamplingParams, samples: int
) -> tuple[list[Completion], list[Verdict]]:
    """`samples` first attempts per problem (prompt-major) and their verdicts."""
    if samples < 1:
        raise ValueError(f"samples must be >= 1, got {samples}")
    if not problems:
        return [], []
    completions = policy.generate([p.prompt for p in problems], replace(params, n=samples))
    return completions, [task.verify(problems[c.prompt_index], c.text) for c in completions]


def failures_of(problems: Sequence[Problem], completions: Sequence[Completion], verdicts: Sequence[Verdict]
                ) -> list[tuple[Problem, Completion]]:
    """The first failed attempt of each problem that has one (its `prompt_index` renumbered)."""
    out: list[tuple[Problem, Completion]] = []
    seen: set[int] = set()
    for c, v in zip(completions, verdicts):
        if not v.correct and c.prompt_index not in seen:
            seen.add(c.prompt_index)
            out.append((problems[c.prompt_index], replace(c, prompt_index=len(out))))
    return out


def sample_failures(
    policy: Sampler, task: Task, problems: Sequence[Problem], params: SamplingParams, samples: int
) -> tuple[list[tuple[Problem, Completion]], float, int]:
    """`failures`, plus the accuracy of all the answers sampled to find them and their token count."""
    completions, verdicts = sample_attempts(policy, task, problems, params, samples)
    if not completions:
        return [], 0.0, 0
    right = sum(v.correct for v in verdicts)
    return failures_of(problems, completions, verdicts), right / len(completions), sum(c.num_tokens for c in completions)


def attempt_episodes(problems: Sequence[Problem], completions: Sequence[Completion], verdicts: Sequence[Verdict],
                     weight: float, group_offset: int) -> list[Episode]:
    """First attempts as episodes of their own, trained with the verifier's reward at per-token loss
    weight `weight` (one group per problem): RRR's option to keep practising the first attempt while
    it learns to reflect (issue 15: without it, the shared weights moved the first attempt)."""
    from selfimprove.rollout.episode import Episode, Segment

    return [
        Episode([Segment("prompt", list(c.prompt_ids)),
                 Segment("attempt", list(c.token_ids), trainable=True, reward=v.score, weights=[weight] * len(c.token_ids),
                         logprobs=c.logprobs, text=c.text)],
                group=group_offset + c.prompt_index, problem_id=problems[c.prompt_index].id, reward=v.score,
                info={"correct": v.correct, "reason": v.reason, "finish_reason": c.finish_reason, "first_attempt": True})
        for c, v in zip(completions, verdicts) if c.token_ids
    ]


def reflect_retry_episodes(
    policy: Sampler,
    task: Task,
    problems: Sequence[Problem],
    first_attempts: Sequence[Completion],
    params: SamplingParams,
    *,
    feedback: str = FAILED_FEEDBACK,
    retry_prompt: str = RETRY_PROMPT,
    group_offset: int = 0,
    retry_temperature: float | None = None,
    reflection_end: str | None = REFLECTION_END,
) -> list[Episode]:
    """`params.n` reflect-retry episodes per *failed* first attempt (right attempts are skipped).

    `first_attempts[k]` answers `problems[first_attempts[k].prompt_index]`; its episodes form group
    `group_offset + k`. Reflections are sampled with `params`; one retry per reflection with the same
    settings (`n = 1`), or at `retry_temperature` when given (0: greedy, so the reward is a function
    of the reflection alone and GRPO's comparison of reflections is not drowned by retry noise). The feedback is the same fixed text for every problem, so it can never reveal
    the answer or the verifier's reason.
    """
    from selfimprove.rollout.episode import Episode, Segment

    eos = policy.eos_ids
    feedback_ids = policy.encode_completion(feedback, add_eos=False)
    retry_ids = policy.encode_completion(retry_prompt, add_eos=False)
    failed: list[tuple[int, Completion, list[int]]] = []
    contexts: list[list[int]] = []
    for k, c in enumerate(first_attempts):
        if task.verify(problems[c.prompt_index], c.text).correct:
            continue
        body, _ = c.without_eos(eos)
        failed.append((k, c, body))
        contexts.append(list(c.prompt_ids) + body + feedback_ids)
    if not failed:
        return []
    # generate_ids gives params.n reflections per context, context-major.
    reflections = policy.generate_ids(contexts, line_params(params, reflection_end))
    bodies = [reflection_body(policy, r) for r in reflections]
    retry_contexts = [contexts[r.prompt_index] + body + retry_ids for r, (body, _) in zip(reflections, bodies)]
    retries = policy.generate_ids(retry_contexts, _one(params, retry_temperature))
    episodes = []
    for r, (body, body_lp), retry in zip(reflections, bodies, retries):
        k, attempt, attempt_body = failed[r.prompt_index]
        problem = problems[attempt.prompt_index]
        verdict = task.verify(problem, retry.text)
        episodes.append(
            Episode(
                segments=[
                    Segment("prompt", list(attempt.prompt_ids)),
                    Segment("attempt", attempt_body, text=attempt.text, generated=True),
                    Segment("feedback", feedback_ids, text=feedback),
                    Segment("reflection", body, trainable=True, reward=verdict.score, logprobs=body_lp, text=r.text),
                    Segment("retry_prompt", retry_ids, text=retry_prompt),
                    Segment("retry", list(retry.token_ids), reward=verdict.score, text=retry.text, generated=True),
                ],
                group=group_offset + k,
                problem_id=problem.id,
                reward=1.0 if verdict.correct else 0.0,
                info={
                    "correct_retry": verdict.correct,
                    "correct": verdict.correct,
                    "reason_retry": verdict.reason,
                    "finish_reason": retry.finish_reason,
                    "reflection_finish_reason": r.finish_reason,
                },
            )
        )
    return episodes


def episodes_for_failures(
    policy: Sampler,
    task: Task,
    failed: Sequence[tuple[Problem, Completion]],
    params: SamplingParams,
    **options: Any,
) -> list[Episode]:
    """`reflect_retry_episodes` on the output of `failures` (one group per failure, in order); `options`
    are its keyword options (feedback, retry_prompt, group_offset, retry_temperature, reflection_end)."""
    problems = [p for p, _ in failed]
    attempts = [replace(c, prompt_index=i) for i, (_, c) in enumerate(failed)]
    return reflect_retry_episodes(policy, task, problems, attempts, params, **options)
