"""Evaluate a policy on a task's problems: greedy accuracy, and unbiased pass@k from samples."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch

from selfimprove.eval.metrics import accuracy, mean_pass_at_k
from selfimprove.policy.base import SamplingParams
from selfimprove.policy.base import Sampler
from selfimprove.tasks.base import Problem, Task
from selfimprove.rollout.verify import verify_all


@dataclass
class EvalResult:
    accuracy: float
    num_problems: int
    generated_tokens: int
    pass_at_k: dict[int, float] = field(default_factory=dict)
    records: list[dict[str, Any]] = field(default_factory=list)

    def metrics(self, prefix: str = "eval") -> dict[str, float]:
        out = {f"{prefix}/accuracy": self.accuracy}
        out.update({f"{prefix}/pass@{k}": v for k, v in self.pass_at_k.items()})
        return out


def evaluate(
    policy: Sampler,
    task: Task,
    problems: Sequence[Problem],
    *,
    batch_size: int = 200,
    max_new_tokens: int = 32,
    samples: int = 0,
    temperature: float = 1.0,
    pass_k: Sequence[int] = (1,),
    seed: int = 0,
    on_batch: Callable[[int], None] | None = None,
) -> EvalResult:
    """Greedy accuracy on `problems`; with `samples > 0` also pass@k for each k in `pass_k`."""
    greedy = SamplingParams(n=1, temperature=0.0, max_new_tokens=max_new_tokens)
    records: list[dict[str, Any]] = []
    tokens = 0
    for start in range(0, len(problems), batch_size):
        chunk = problems[start : start + batch_size]
        completions = policy.generate([p.prompt for p in chunk], greedy)
        verdicts = verify_all(policy, task, [chunk[c.prompt_index] for c in completions], [c.text for c in completions])
        for c, v in zip(completions, verdicts):
            p = chunk[c.prompt_index]
            tokens += c.num_tokens
            records.append({"id": p.id, "prompt": p.prompt, "answer": p.answer, "text": c.text, "correct": v.correct, "reason": v.reason})
        if on_batch:
            on_batch(len(chunk))
    result = EvalResult(accuracy([r["correct"] for r in records]), len(problems), tokens, records=records)
    if samples:
        generator = torch.Generator().manual_seed(seed)
        params = SamplingParams(n=samples, temperature=temperature, max_new_tokens=max_new_tokens)
        counts = []
        per_batch = max(1, batch_size // samples)
        for start in range(0, len(problems), per_batch):
            chunk = problems[start : start + per_batch]
            right = [0] * len(chunk)
            completions = policy.generate([p.prompt for p in chunk], params, generator=generator)
            verdicts = verify_all(policy, task, [chunk[c.prompt_index] for c in completions], [c.text for c in completions])
            for c, v in zip(completions, verdicts):
                right[c.prompt_index] += v.correct
                result.generated_tokens += c.num_tokens
            counts.extend((samples, r) for r in right)
        result.pass_at_k = {k: mean_pass_at_k(counts, k) for k in pass_k}
    return result
