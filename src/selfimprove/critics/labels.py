"""Monte-Carlo labels for the critics, from the policy's own rollouts (AlphaLLM, SPECS §5).

For each problem the policy samples `samples_per_problem` full answers. Each answer is split into steps
with the search's `StepRule`, exactly as the search splits them (at token boundaries: the ids the
policy sampled, never re-tokenised text), giving prefixes at depth 0 (the prompt alone), 1, ..., S (the
whole answer). Identical prefixes of one problem (same prompt text) are labelled once. Then:

- an **unfinished prefix** at depth d >= 1 gets `rollouts_per_prefix` (m) completions, sampled in one
  batched call for many prefixes of many problems, under the samples' answer cap; its estimate q =
  fraction of completions (prefix + continuation) the task verifies as right. The depth-0 prefix needs
  no extra calls: the problem's own samples are rollouts from the prompt, so q = fraction of right
  samples (from `samples_per_problem` rollouts, not m);
- a **finished answer** (every sample; it ended with an end token or at the length limit) has the
  exact estimate q = 1 or 0 from the verifier.

Labels per critic kind:
- `value`: every distinct prefix (depth 0..S-1, unfinished) with label q, and every distinct finished
  answer with its outcome: MSE regression to the probability of ending right;
- `prm`: every distinct prefix that ends a step (depth >= 1) with label `q > 0` (prm_label "hard":
  some continuation still reaches a right answer, Math-Shepherd's hard estimate) or q itself ("soft");
  the last step of a finished answer gets its outcome;
- `orm`: every distinct finished answer with its outcome, including (with `rollout_outcomes`) the
  finished answers the rollouts produced, which cost nothing extra.

An example's `token_ids` is exactly what the critic reads at search time (`model.critic_input`).
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable, Iterable, Sequence

import torch

from selfimprove.critics.model import critic_input
from selfimprove.critics.recipe import KINDS, Kind
from selfimprove.critics.recipe import LabelsConfig
from selfimprove.policy.base import Sampler, SamplingParams
from selfimprove.rollout.expand import split_ids
from selfimprove.rollout.state import StepRule
from selfimprove.tasks.base import Problem, Task


@dataclass(frozen=True)
class Example:
    """One labelled critic input."""

    kind: Kind
    token_ids: tuple[int, ...]  # prompt + completion so far, in `critic_input` form
    label: float  # the training target in [0, 1]
    group: str  # the problem's prompt: a held-out split keeps a problem's examples together
    depth: int  # steps in the prefix (0: the prompt alone)
    finished: bool
    estimate: float  # fraction of right rollouts (or the exact outcome) behind the label
    rollouts: int  # rollouts behind the estimate; 0: the exact verdict of a finished answer
    text: str = ""  # the completion so far, for people reading labels.jsonl

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "token_ids": list(self.token_ids)})

    @classmethod
    def from_json(cls, line: str) -> "Example":
        data = json.loads(line)
        kind = data.get("kind")
        if kind not in KINDS:
            raise ValueError(f"unknown critic kind {kind!r} in a labels line")
        return cls(**{**data, "token_ids": tuple(int(t) for t in data["token_ids"])})


def smooth_labels(examples: Sequence[Example], pseudo_count: float, *, prm_label: str = "hard") -> list[Example]:
    """Monte-Carlo labels shrunk toward 1/2 by how few rollouts stand behind them (a Beta(a, a) prior's
    posterior mean, a = `pseudo_count`): r right of n becomes (r + a) / (n + 2a). A hard PRM label of 0
    becomes a / (n + 2a) (no right rollout in n is evidence, not proof, that the step is dead); a hard 1
    stays 1 (one right rollout proves it can still succeed). Exact verdicts (`rollouts` 0) are kept.
    For training only: held-out metrics read the raw labels."""
    if pseudo_count < 0:
        raise ValueError(f"label smoothing's pseudo-count must be >= 0, got {pseudo_count}")
    if pseudo_count == 0:
        return list(examples)
    a = pseudo_count
    out = []
    for e in examples:
        if e.rollouts > 0 and not (e.kind == "prm" and prm_label == "hard" and e.label >= 1.0):
            # (a hard PRM label that gets here is 0, and so is its estimate: no rollout was right)
            e = replace(e, label=(e.estimate * e.rollouts + a) / (e.rollouts + 2 * a))
        out.append(e)
    return out


def balance_labels(examples: Sequence[Example], seed: int, *, threshold: float = 0.5) -> list[Example]:
    """Each kind's examples with its rarer class (label >= `threshold` or below) drawn again at random,
    with replacement, until both classes are as many: a critic whose labels are 80% wrong answers can
    score every answer low and still fit most of them. Order kept, the draws appended; a kind with an
    empty class is left as it is (nothing to draw). For training only: held-out metrics read the raw set."""
    rng = random.Random(seed)
    out = list(examples)
    for kind in sorted({e.kind for e in examples}):
        right = [e for e in examples if e.kind == kind and e.label >= threshold]
        wrong = [e for e in examples if e.kind == kind and e.label < threshold]
        if right and wrong and len(right) != len(wrong):
            rare, common = (right, wrong) if len(right) < len(wrong) else (wrong, right)
            out += rng.choices(rare, k=len(common) - len(rare))
    return out


def save_labels(path: str | Path, examples: Iterable[Example]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(e.to_json() + "\n" for e in examples))
    return path


def load_labels(path: str | Path) -> list[Example]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"labels file {path} does not exist")
    return [Example.from_json(line) for line in path.read_text().splitlines() if line.strip()]


# --------------------------------------------------------------------------------------- steps
def step_boundaries(policy: Sampler, ids: Sequence[int], rule: StepRule) -> list[int]:
    """Token counts at which the steps of a completion (without its end token) end: strictly
    increasing, the last is len(ids).

    The search's own splitter (`search.expand.split_ids`: text steps mapped to token ends, a token that
    straddles a boundary joins the earlier step), then every step longer than `rule.max_step_tokens` is
    cut every `max_step_tokens` tokens, as a search cuts a step that does not end within its budget.
    """
    if not ids:
        return []
    ends: list[int] = []
    total = 0
    for piece in split_ids(policy, ids, rule):
        start, total = total, total + len(piece)
        while total - start > rule.max_step_tokens:
            start += rule.max_step_tokens
            ends.append(start)
        ends.append(total)
    return ends


# --------------------------------------------------------------------------------------- labelling
@dataclass
class _Prefix:
    problem: int  # index into the batch
    ids: tuple[int, ...]  # completion ids so far (no end token)
    depth: int
    right: int = 0
    total: int = 0


class _Collector:
    """Distinct examples per (kind, problem, ids); the first label seen wins (they are all equal)."""

    def __init__(self, kinds: Sequence[Kind]) -> None:
        self.kinds = set(kinds)
        self.seen: set[tuple[str, str, tuple[int, ...]]] = set()
        self.examples: list[Example] = []

    def add(self, example: Example) -> None:
        if example.kind not in self.kinds:
            return
        key = (example.kind, example.group, example.token_ids)
        if key not in self.seen:
            self.seen.add(key)
            self.examples.append(example)


def build_labels(
    policy: Sampler,
    task: Task,
    problems: Sequence[Problem],
    rule: StepRule,
    config: LabelsConfig,
    *,
    kinds: Sequence[Kind] = KINDS,
    generator: torch.Generator | None = None,
    on_problems: Callable[[int], None] | None = None,
) -> list[Example]:
    """Label `problems` in batches of `config.problems_per_batch`; `on_problems(done)` after each batch."""
    out = _Collector(kinds)
    done = 0
    for start in range(0, len(problems), config.problems_per_batch):
        chunk = problems[start : start + config.problems_per_batch]
        _label_batch(policy, task, chunk, rule, config, out, generator)
        done += len(chunk)
        if on_problems is not None:
            on_problems(done)
    return out.examples


def estimate_prefixes(policy: Sampler, task: Task, problems: Sequence[Problem], prefixes: Sequence[tuple[int, Sequence[int]]],
                      config: LabelsConfig, *, generator: torch.Generator | None = None) -> list[tuple[int, int]]:
    """(right, total) of `config.rollouts_per_prefix` fresh completions from each (problem index, completion
    ids so far) prefix, under the samples' answer cap: the Monte-Carlo estimate `build_labels` makes,
    made again (e.g. with more rollouts, to measure how noisy a label set is)."""
    prompts = [policy.encode_prompt(p.prompt) for p in problems]
    states = [_Prefix(i, tuple(int(t) for t in ids), 0) for i, ids in prefixes]
    # (the step rule only counts steps of rollout answers kept as ORM examples: none are kept here)
    _roll_out(policy, task, problems, prompts, states, StepRule("newline"), config.model_copy(update={"rollout_outcomes": False}),
              generator, lambda *a, **k: None)
    return [(p.right, p.total) for p in states]


def _label_batch(policy: Sampler, task: Task, problems: Sequence[Problem], rule: StepRule,
                 config: LabelsConfig, out: _Collector, generator: torch.Generator | None) -> None:
    eos = list(policy.eos_ids)
    prompts = [policy.encode_prompt(p.prompt) for p in problems]
    params = SamplingParams(n=config.samples_per_problem, temperature=config.temperature, top_p=config.top_p,
                            max_new_tokens=config.max_new_tokens)

    def add(kind: Kind, i: int, ids: Sequence[int], label: float, depth: int, finished: bool, estimate: float,
            rollouts: int) -> None:
        token_ids = tuple(critic_input(list(prompts[i]) + list(ids), finished=finished, eos_ids=eos))
        out.add(Example(kind, token_ids, float(label), problems[i].prompt, depth, finished, float(estimate),
                        rollouts, policy.detokenize(list(ids))))

    # Keyed by prompt text, so a problem drawn twice pools its samples and shares its rollouts.
    roots: dict[str, _Prefix] = {}
    inner: dict[tuple[str, tuple[int, ...]], _Prefix] = {}
    answers: list[tuple[int, list[int], int, bool]] = []  # problem, ids, steps, right
    for c in policy.generate_ids(prompts, params, generator=generator):
        i = c.prompt_index
        ids, _ = c.without_eos(eos)
        right = task.verify(problems[i], policy.detokenize(ids)).correct
        root = roots.setdefault(problems[i].prompt, _Prefix(i, (), 0))
        root.total += 1
        root.right += int(right)
        ends = step_boundaries(policy, ids, rule)
        for depth, end in enumerate(ends[:-1], start=1):
            key = (problems[i].prompt, tuple(ids[:end]))
            if key not in inner:
                inner[key] = _Prefix(i, key[1], depth)
        answers.append((i, ids, len(ends), right))

    _roll_out(policy, task, problems, prompts, list(inner.values()), rule, config, generator, add)

    for p in roots.values():
        add("value", p.problem, (), p.right / p.total, 0, False, p.right / p.total, p.total)
    for p in inner.values():
        q = p.right / p.total
        add("value", p.problem, p.ids, q, p.depth, False, q, p.total)
        add("prm", p.problem, p.ids, (1.0 if q > 0 else 0.0) if config.prm_label == "hard" else q, p.depth, False, q, p.total)
    for i, ids, steps, right in answers:
        outcome = 1.0 if right else 0.0
        add("value", i, ids, outcome, steps, True, outcome, 0)
        if steps:
            add("prm", i, ids, outcome, steps, True, outcome, 0)
        add("orm", i, ids, outcome, steps, True, outcome, 0)


def _roll_out(policy: Sampler, task: Task, problems: Sequence[Problem], prompts: Sequence[Sequence[int]],
              prefixes: list[_Prefix], rule: StepRule, config: LabelsConfig, generator: torch.Generator | None,
              add: Callable[..., None]) -> None:
    """m completions per prefix, `max_rollout_rows` sequences per generate call; counts right ones.

    A rollout continues under the samples' answer cap: prefix + continuation is cut at
    `max_new_tokens` tokens, which is exactly a sample drawn with that cap (decoding is left to right),
    so a prefix's estimate is the chance of ending right within the same length as the samples.
    """
    if not prefixes:
        return
    eos = list(policy.eos_ids)
    m, cap = config.rollouts_per_prefix, config.max_new_tokens
    per_call = max(1, config.max_rollout_rows // m)
    for start in range(0, len(prefixes), per_call):
        chunk = prefixes[start : start + per_call]
        rows = [list(prompts[p.problem]) + list(p.ids) for p in chunk]
        longest = max(cap - len(p.ids) for p in chunk)  # >= 1: a prefix is shorter than its sample
        params = SamplingParams(n=m, temperature=config.temperature, top_p=config.top_p, max_new_tokens=longest)
        for c in policy.generate_ids(rows, params, generator=generator):
            p = chunk[c.prompt_index]
            tail = list(c.token_ids[: cap - len(p.ids)])
            ids = list(p.ids) + (tail[:-1] if tail and tail[-1] in eos else tail)
            right = task.verify(problems[p.problem], policy.detokenize(ids)).correct
            p.total += 1
            p.right += int(right)
            if config.rollout_outcomes:
                outcome = 1.0 if right else 0.0
                add("orm", p.problem, ids, outcome, len(step_boundaries(policy, ids, rule)), True, outcome, 0)
