"""Evaluate a policy on a task's problems: greedy accuracy (and, for tasks judged by a number read from
free text, strict and lenient answer extraction side by side), and from `samples` completions per
problem the unbiased pass@k, maj@k (a majority vote over the first k samples' answers, through
`Task.answer_key`; answers with no key vote together as "invalid", which is wrong if it wins) and avg@n
(the mean over all n samples). Every completion is kept as a record (the
greedy ones and each sample), for `eval_samples.jsonl` and `selfimprove export`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Sequence

import torch

from selfimprove.eval.metrics import accuracy, mean_pass_at_k
from selfimprove.eval.voting import majority_vote
from selfimprove.policy.base import SamplingParams
from selfimprove.policy.base import Sampler
from selfimprove.tasks.base import Problem, Task, Verdict
from selfimprove.rollout.verify import verify_all

if TYPE_CHECKING:
    from selfimprove.config import EvalConfig
    from selfimprove.rollout.conversation import EnvRun


@dataclass
class EvalResult:
    accuracy: float
    num_problems: int
    generated_tokens: int
    pass_at_k: dict[int, float] = field(default_factory=dict)
    maj_at_k: dict[int, float] = field(default_factory=dict)
    avg_at_n: float | None = None
    strict_accuracy: float | None = None  # tasks judged by a number: only a marked final answer counts
    sampling: dict[str, Any] = field(default_factory=dict)  # how the samples behind pass/maj/avg were drawn
    records: list[dict[str, Any]] = field(default_factory=list)  # greedy completions, one per problem
    sample_records: list[dict[str, Any]] = field(default_factory=list)  # every sampled completion

    def metrics(self, prefix: str = "eval") -> dict[str, float]:
        out = {f"{prefix}/accuracy": self.accuracy}
        if self.strict_accuracy is not None:
            out[f"{prefix}/accuracy_strict"] = self.strict_accuracy
            out[f"{prefix}/accuracy_lenient"] = self.accuracy
        out.update({f"{prefix}/pass@{k}": v for k, v in self.pass_at_k.items()})
        out.update({f"{prefix}/maj@{k}": v for k, v in self.maj_at_k.items()})
        if self.avg_at_n is not None:
            out[f"{prefix}/avg@{self.sampling['samples']}"] = self.avg_at_n
        return out

    def all_records(self) -> list[dict[str, Any]]:
        return self.records + self.sample_records


INVALID = "\0[invalid]"  # the vote of an answer with no key: it can win, and then counts as wrong (as lm-eval)


def _record(problem: Problem, text: str, verdict: Any, **extra: Any) -> dict[str, Any]:
    return {"id": problem.id, "prompt": problem.prompt, "answer": problem.answer, "text": text, "correct": verdict.correct,
            "score": verdict.score, "reason": verdict.reason, **extra}


@dataclass
class Attempt:
    """One answer to one problem: a completion, or a whole conversation with an environment."""

    index: int  # the problem's position in the batch
    text: str  # what the model wrote (a conversation: its transcript after the prompt)
    verdict: Verdict
    tokens: int  # tokens the model generated for it
    key: str | None  # what a vote groups a conversation by (a completion's is the task's `answer_key`)
    extra: dict[str, Any] = field(default_factory=dict)  # a conversation's messages, turns and tool calls


def attempts(policy: Sampler, task: Task, problems: Sequence[Problem], params: SamplingParams, *,
             env: EnvRun | None = None, generator: torch.Generator | None = None) -> list[Attempt]:
    """`params.n` answers per problem (problem-major), judged: completions and the task's verifier, or
    conversations with the environment and its judge."""
    if env is None:
        completions = policy.generate([p.prompt for p in problems], params, generator=generator)
        verdicts = verify_all(policy, task, [problems[c.prompt_index] for c in completions], [c.text for c in completions])
        return [Attempt(c.prompt_index, c.text, v, c.num_tokens, None) for c, v in zip(completions, verdicts)]
    from selfimprove.rollout.conversation import run_conversations

    episodes = run_conversations(policy, env.env, problems, params, env.limits(params.max_new_tokens), generator=generator)
    out = []
    for e in episodes:
        info = e.info
        verdict = Verdict(float(e.reward), bool(info["correct"]), str(info["reason"]))
        extra = {"messages": info["messages"], "turns": info["turns"], "tool_calls": info["tool_calls"], "end": info["end"]}
        out.append(Attempt(e.group, e.texts(policy.detokenize)[1], verdict, int(info["sampled_tokens"]), info["answer_key"], extra))
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
    top_p: float = 1.0,
    pass_k: Sequence[int] = (1,),
    maj_k: Sequence[int] | None = None,
    seed: int = 0,
    on_batch: Callable[[int], None] | None = None,
    env: EnvRun | None = None,
) -> EvalResult:
    """Greedy accuracy on `problems`; with `samples > 0` also pass@k, maj@k (k in `maj_k`, default
    `pass_k`) and avg@n. `on_batch(n)` is told of every n problems done (greedy, then sampled). With an
    environment (`env`), every answer is a whole conversation, judged by the environment."""
    greedy = SamplingParams(n=1, temperature=0.0, max_new_tokens=max_new_tokens)
    records: list[dict[str, Any]] = []
    strict: list[bool] = []
    tokens = 0
    for start in range(0, len(problems), batch_size):
        chunk = problems[start : start + batch_size]
        for a in attempts(policy, task, chunk, greedy, env=env):
            p = chunk[a.index]
            tokens += a.tokens
            extra: dict[str, Any] = {"mode": "greedy", **a.extra}
            marked = task.strict_verify(p, a.text) if env is None else None
            if marked is not None:
                strict.append(marked.correct)
                extra["strict_correct"] = marked.correct
            records.append(_record(p, a.text, a.verdict, **extra))
        if on_batch:
            on_batch(len(chunk))
    result = EvalResult(accuracy([r["correct"] for r in records]), len(problems), tokens, records=records,
                        strict_accuracy=accuracy(strict) if strict else None)
    if samples:
        _sampled(result, policy, task, problems, batch_size, SamplingParams(n=samples, temperature=temperature, top_p=top_p,
                                                                           max_new_tokens=max_new_tokens),
                 pass_k, list(pass_k if maj_k is None else maj_k), seed, on_batch, env)
    return result


def _sampled(result: EvalResult, policy: Sampler, task: Task, problems: Sequence[Problem], batch_size: int,
             params: SamplingParams, pass_k: Sequence[int], maj_k: Sequence[int], seed: int,
             on_batch: Callable[[int], None] | None, env: EnvRun | None = None) -> None:
    """pass@k, maj@k and avg@n from `params.n` samples per problem, drawn from a generator of `seed`."""
    generator = torch.Generator().manual_seed(seed)
    n = params.n
    counts: list[tuple[int, int]] = []
    votes: dict[int, list[bool]] = {k: [] for k in maj_k}
    per_batch = max(1, batch_size // n)
    for start in range(0, len(problems), per_batch):
        chunk = problems[start : start + per_batch]
        per_problem: list[list[tuple[str | None, bool]]] = [[] for _ in chunk]
        for a in attempts(policy, task, chunk, params, env=env, generator=generator):
            p = chunk[a.index]
            result.generated_tokens += a.tokens
            result.sample_records.append(_record(p, a.text, a.verdict, mode="sampled", sample=len(per_problem[a.index]),
                                                 **a.extra))
            per_problem[a.index].append((a.key if env is not None else task.answer_key(p, a.text), a.verdict.correct))
        for p, answers in zip(chunk, per_problem):
            counts.append((n, sum(ok for _, ok in answers)))
            keys = [key or INVALID for key, _ in answers]
            for k in maj_k:
                vote = majority_vote(keys[:k])
                votes[k].append(vote.key != INVALID and answers[vote.index][1])
        if on_batch:
            on_batch(len(chunk))
    result.pass_at_k = {k: mean_pass_at_k(counts, k) for k in pass_k}
    result.maj_at_k = {k: accuracy(v) for k, v in votes.items()}
    result.avg_at_n = sum(c for _, c in counts) / max(1, n * len(counts))
    result.sampling = {"samples": n, "temperature": params.temperature, "top_p": params.top_p,
                       "max_new_tokens": params.max_new_tokens, "seed": seed}


def evaluate_with(policy: Sampler, task: Task, problems: Sequence[Problem], config: EvalConfig, seed: int,
                  on_batch: Callable[[int], None] | None = None, env: EnvRun | None = None) -> EvalResult:
    """`evaluate` with a recipe's `eval` section (and its environment, when it has one)."""
    return evaluate(policy, task, problems, batch_size=config.batch_size, max_new_tokens=config.max_new_tokens,
                    samples=config.samples, temperature=config.temperature, top_p=config.top_p, pass_k=config.pass_k,
                    maj_k=config.vote_k, seed=seed, on_batch=on_batch, env=env)
