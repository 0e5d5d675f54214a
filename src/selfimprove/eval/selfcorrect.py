"""Evaluate self-correction with SCoRe's metrics (SPECS §2), greedy throughout, two protocols:

- `evaluate_two_attempts`: attempt 1 | the fixed instruction | attempt 2 (what SCoRe, STaR and
  Pair-SFT train for).
- `evaluate_self_refine`: prompting only, no training signal and no verifier in the loop: attempt 1 |
  a neutral review marker | the model's own critique | the retry marker | attempt 2, for every problem,
  right or wrong. The verifier only scores the two attempts afterwards. Because the review never says
  whether attempt 1 was right, a model that "fixes" right answers shows it as Delta_c->i.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from selfimprove.eval.metrics import self_correction_metrics
from selfimprove.policy.base import SamplingParams
from selfimprove.policy.base import Sampler
from selfimprove.rollout.correct import SHORT_INSTRUCTION, two_attempt_episodes
from selfimprove.rollout.reflect import RETRY_PROMPT, REVIEW_FEEDBACK, line_params, reflection_body
from selfimprove.tasks.base import Problem, Task

__all__ = ["evaluate_self_refine", "evaluate_two_attempts"]


def _greedy(max_new_tokens: int) -> SamplingParams:
    return SamplingParams(n=1, temperature=0.0, max_new_tokens=max_new_tokens)


def evaluate_two_attempts(
    policy: Sampler,
    task: Task,
    problems: Sequence[Problem],
    *,
    instruction: str = SHORT_INSTRUCTION,
    max_new_tokens: int = 32,
    batch_size: int = 200,
    on_batch: Callable[[int], None] | None = None,
) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """SCoRe's metrics (Acc@t1, Acc@t2, Delta, i->c, c->i, edit-distance ratio) and one record per problem.
    `on_batch(n)` is called after each batch of `n` problems (for a progress bar)."""
    episodes = []
    for start in range(0, len(problems), batch_size):
        chunk = problems[start : start + batch_size]
        episodes += two_attempt_episodes(policy, task, chunk, _greedy(max_new_tokens), instruction=instruction)
        if on_batch is not None:
            on_batch(len(chunk))
    first = [bool(e.info["correct1"]) for e in episodes]
    second = [bool(e.info["correct2"]) for e in episodes]
    texts1 = [e.segment("attempt1").text for e in episodes]
    texts2 = [e.segment("attempt2").text for e in episodes]
    records = [
        {"id": p.id, "prompt": p.prompt, "attempt1": t1, "attempt2": t2, "correct1": c1, "correct2": c2}
        for p, t1, t2, c1, c2 in zip(problems, texts1, texts2, first, second)
    ]
    return self_correction_metrics(first, second, texts1, texts2), records


def evaluate_self_refine(
    policy: Sampler,
    task: Task,
    problems: Sequence[Problem],
    *,
    review: str = REVIEW_FEEDBACK,
    retry_prompt: str = RETRY_PROMPT,
    max_new_tokens: int = 32,
    batch_size: int = 200,
    on_batch: Callable[[int], None] | None = None,
) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Self-refine prompting, greedy: attempt 1, `review`, a critique, `retry_prompt`, attempt 2 for
    every problem. Returns the metrics of `evaluate_two_attempts` and one record per problem (with the
    critique). Each of the three generations gets up to `max_new_tokens` tokens."""
    greedy = _greedy(max_new_tokens)
    eos = policy.eos_ids
    review_ids = policy.encode_completion(review, add_eos=False)
    retry_ids = policy.encode_completion(retry_prompt, add_eos=False)
    records: list[dict[str, Any]] = []
    for start in range(0, len(problems), batch_size):
        chunk = problems[start : start + batch_size]
        first = policy.generate([p.prompt for p in chunk], greedy)
        review_contexts = [list(c.prompt_ids) + c.without_eos(eos)[0] + review_ids for c in first]
        critiques = policy.generate_ids(review_contexts, line_params(greedy))  # a critique is one line
        retry_contexts = [ctx + reflection_body(policy, k)[0] + retry_ids for ctx, k in zip(review_contexts, critiques)]
        second = policy.generate_ids(retry_contexts, greedy)
        for p, a1, k, a2 in zip(chunk, first, critiques, second):
            records.append({
                "id": p.id, "prompt": p.prompt, "attempt1": a1.text, "critique": k.text, "attempt2": a2.text,
                "correct1": task.verify(p, a1.text).correct, "correct2": task.verify(p, a2.text).correct,
            })
        if on_batch is not None:
            on_batch(len(chunk))
    metrics = self_correction_metrics(
        [r["correct1"] for r in records], [r["correct2"] for r in records],
        [r["attempt1"] for r in records], [r["attempt2"] for r in records],
    )
    return metrics, records
