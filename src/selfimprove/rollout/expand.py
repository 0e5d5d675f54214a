"""The two moves every search makes on the policy: propose next steps, or finish states to the end.

Both take the states of *many problems at once* and make one batched `generate_ids` call for all of
them (lockstep), so a search round costs one policy call whatever the number of problems. States with
the same token context (N copies of a root, siblings of one parent) are sent as one prompt with
`n > 1`, so the decoder computes their shared prefix once.

Token accounting is exact: every token the policy generated for a problem is charged to that problem's
`Budget`, including tokens a step cut drops (generated past the end of a step, or past the answer
cap). A child records what was dropped for it in `info["discarded_tokens"]`, so for any call
`sum(child's new tokens + discarded) == tokens charged`.

Text and tokens always agree: a step's text is the detokenized text of its own token ids. When a step
end falls inside a token (a BPE token such as `".\\n1"`), the cut is rounded *up* to the end of that
token, so the step keeps the whole token (and may hold a few characters past the rule's end). A final
end token stays in the last step's ids (its text is empty), so `State.token_ids` is exactly what the
policy produced; `strip_eos` removes it where a context must go on (revision).
"""

from __future__ import annotations

import dataclasses
import math
from collections import defaultdict
from typing import Sequence

import torch

from selfimprove.policy.base import Completion, Sampler, SamplingParams
from selfimprove.rollout.budget import Budget
from selfimprove.rollout.state import State, StepRule
from selfimprove.tasks.base import Problem


def root_states(policy: Sampler, problems: Sequence[Problem]) -> list[State]:
    """One empty state per problem: the encoded prompt and no steps yet."""
    return [State(i, tuple(policy.encode_prompt(p.prompt))) for i, p in enumerate(problems)]


def strip_eos(ids: Sequence[int], eos_ids: Sequence[int]) -> list[int]:
    """The ids without a final end token (a context that goes on after an answer must not hold one)."""
    ids = list(ids)
    return ids[:-1] if ids and ids[-1] in eos_ids else ids


# ------------------------------------------------------------------------------------ token <-> text
def prefix_lengths(policy: Sampler, ids: Sequence[int]) -> list[int]:
    """`out[k]` = length of the text of `ids[:k]`, for k = 0..len(ids).

    Fast path: when the tokens' own texts concatenate to the whole text (character and byte-level
    tokenizers), one detokenize per token. Otherwise each prefix is detokenized (quadratic, but steps
    are short), and the lengths are made non-decreasing so a cut always maps to one boundary.
    """
    ids = list(ids)
    pieces = [policy.detokenize([t]) for t in ids]
    if "".join(pieces) == policy.detokenize(ids):
        out = [0]
        for piece in pieces:
            out.append(out[-1] + len(piece))
        return out
    out = [0]
    for k in range(1, len(ids) + 1):
        out.append(max(out[-1], len(policy.detokenize(ids[:k]))))
    return out


def token_boundary(lengths: Sequence[int], char_end: int) -> int:
    """The fewest tokens whose text reaches `char_end` characters (the cut rounded up to a token end)."""
    for k, n in enumerate(lengths):
        if n >= char_end:
            return k
    return len(lengths) - 1


def split_ids(policy: Sampler, ids: Sequence[int], rule: StepRule) -> list[tuple[int, ...]]:
    """Split a whole completion's ids into steps by `rule` (cuts rounded up to token ends).

    A final end token joins the last step; an empty completion that is just an end token is one step.
    """
    ids = list(ids)
    body = strip_eos(ids, policy.eos_ids)
    text = policy.detokenize(body)
    lengths = prefix_lengths(policy, body)
    cuts: list[int] = []
    offset = 0
    for step in rule.split(text):
        offset += len(step)
        k = token_boundary(lengths, offset)
        if k > (cuts[-1] if cuts else 0):
            cuts.append(k)
    if not cuts or cuts[-1] < len(body):
        cuts.append(len(body))
    pieces, start = [], 0
    for k in cuts:
        pieces.append(tuple(body[start:k]))
        start = k
    if len(ids) > len(body):  # the end token
        pieces[-1] = pieces[-1] + tuple(ids[len(body):])
    return [p for p in pieces if p] or [tuple(ids)]


# ------------------------------------------------------------------------------------ batched calls
def grouped_generate(
    policy: Sampler,
    contexts: Sequence[Sequence[int]],
    counts: Sequence[int],
    params: SamplingParams,
    generator: torch.Generator | None,
) -> list[list[Completion]]:
    """`counts[i]` completions of `contexts[i]`, in one `generate_ids` call.

    Identical contexts are merged; with g = gcd of the merged counts, each distinct context is sent
    total/g times with `n = g`, so the shared prefix is computed as few times as one uniform `n`
    allows (once per context when all counts are equal, the usual case).
    """
    keys = [tuple(c) for c in contexts]
    totals: dict[tuple[int, ...], int] = {}
    for context, count in zip(keys, counts, strict=True):
        if count > 0:
            totals[context] = totals.get(context, 0) + count
    if not totals:
        return [[] for _ in contexts]
    n = math.gcd(*totals.values())
    prompts = [context for context, total in totals.items() for _ in range(total // n)]
    completions = policy.generate_ids(prompts, dataclasses.replace(params, n=n), generator=generator)
    if len(completions) != len(prompts) * n:
        raise RuntimeError(f"policy returned {len(completions)} completions, expected {len(prompts) * n}")
    pools: dict[tuple[int, ...], list[Completion]] = defaultdict(list)
    for prompt, start in zip(prompts, range(0, len(completions), n)):
        pools[prompt].extend(completions[start : start + n])
    out = []
    for context, count in zip(keys, counts):
        taken = pools[context][:count] if count > 0 else []
        pools[context] = pools[context][len(taken):]
        out.append(taken)
    return out


def _charge(budgets: Sequence[Budget], tokens_by_problem: dict[int, int]) -> None:
    for problem, tokens in tokens_by_problem.items():
        budgets[problem].charge_policy(tokens)


def _remaining_answer(state: State, max_answer_tokens: int | None) -> int | None:
    return None if max_answer_tokens is None else max_answer_tokens - state.num_completion_tokens


# ------------------------------------------------------------------------------------ propose_steps
@dataclasses.dataclass
class _Draft:
    """One child being generated: the tokens of its step so far and how the last call ended."""

    parent: State
    cap: int  # tokens the step may keep (step limit, or what is left of the answer cap)
    ids: list[int]
    reason: str


def propose_steps(
    policy: Sampler,
    states: Sequence[State],
    k: int | Sequence[int],
    rule: StepRule,
    params: SamplingParams,
    budgets: Sequence[Budget],
    *,
    max_answer_tokens: int | None = None,
    generator: torch.Generator | None = None,
) -> list[list[State]]:
    """`k[i]` sampled next steps of `states[i]` as child states (`[]` for a finished state, one whose
    problem's budget is exhausted, or `k[i] == 0`).

    One batched call samples every child of every state (temperature and top-p from `params`; the
    stop strings are `rule.stop` and at most `rule.max_step_tokens` tokens). Stop strings only
    over-approximate a step end (the `equation` rule stops at every newline but a line without an
    equation does not end a step), so children stopped early go on in a follow-up call of their own.
    A child is finished when the policy emitted its end token as part of the step, or when the answer
    reached `max_answer_tokens` (then it is cut there, reason `length`). A step that never ends is cut
    at `rule.max_step_tokens` and the child is not finished.

    Each call charges every problem that took part one policy call and all its generated tokens.
    """
    ks = [k] * len(states) if isinstance(k, int) else list(k)
    if len(ks) != len(states):
        raise ValueError(f"k has {len(ks)} entries for {len(states)} states")
    if any(x < 0 for x in ks):
        raise ValueError(f"k must be >= 0, got {ks}")
    if max_answer_tokens is not None and max_answer_tokens < 1:
        raise ValueError(f"max_answer_tokens must be >= 1, got {max_answer_tokens}")
    step_cap = [_step_cap(s, rule, max_answer_tokens) for s in states]
    counts = [
        0 if s.finished or budgets[s.problem_index].exhausted or cap == 0 else x
        for s, x, cap in zip(states, ks, step_cap)
    ]
    drafts: list[list[_Draft]] = [[] for _ in states]
    pending: list[_Draft] = []
    call_cap = max((c for c, n in zip(step_cap, counts) if n), default=0)
    if call_cap:
        call = dataclasses.replace(params, stop=rule.stop, max_new_tokens=call_cap)
        results = grouped_generate(policy, [s.token_ids for s in states], counts, call, generator)
        tokens: dict[int, int] = defaultdict(int)
        for i, (state, completions) in enumerate(zip(states, results)):
            for c in completions:
                tokens[state.problem_index] += c.num_tokens
                draft = _Draft(state, step_cap[i], list(c.token_ids), c.finish_reason)
                drafts[i].append(draft)
                if _needs_more(policy, draft, rule):
                    pending.append(draft)
        _charge(budgets, tokens)
    while pending:  # rare: stops that did not end a step (equation rule); one more call for them all
        pending = _continue(policy, pending, rule, params, budgets, generator)
    return [[_child(policy, d, rule, max_answer_tokens) for d in ds] for ds in drafts]


def _step_cap(state: State, rule: StepRule, max_answer_tokens: int | None) -> int:
    """Tokens one step of `state` may take: the step limit, or what is left of the answer cap."""
    remaining = _remaining_answer(state, max_answer_tokens)
    return rule.max_step_tokens if remaining is None else max(0, min(rule.max_step_tokens, remaining))


def _needs_more(policy: Sampler, draft: _Draft, rule: StepRule) -> bool:
    """A stop string fired but the rule sees no complete step yet, and the step may still grow."""
    if draft.reason != "stop" or len(draft.ids) >= draft.cap:
        return False
    return rule.step_end(policy.detokenize(draft.ids)) is None


def _continue(
    policy: Sampler,
    drafts: list[_Draft],
    rule: StepRule,
    params: SamplingParams,
    budgets: Sequence[Budget],
    generator: torch.Generator | None,
) -> list[_Draft]:
    """One call that extends every pending draft by one more stop-to-stop piece."""
    limits = [d.cap - len(d.ids) for d in drafts]
    call = dataclasses.replace(params, n=1, stop=rule.stop, max_new_tokens=max(limits))
    contexts = [d.parent.token_ids + d.ids for d in drafts]
    completions = policy.generate_ids(contexts, call, generator=generator)
    tokens: dict[int, int] = defaultdict(int)
    still = []
    for d, c in zip(drafts, completions, strict=True):
        tokens[d.parent.problem_index] += c.num_tokens
        d.ids.extend(c.token_ids)
        d.reason = c.finish_reason
        if _needs_more(policy, d, rule):
            still.append(d)
    _charge(budgets, tokens)
    return still


def _child(policy: Sampler, draft: _Draft, rule: StepRule, max_answer_tokens: int | None) -> State:
    """Cut a draft to its first step (and to its token cap) and make the child state."""
    ids = draft.ids
    body = strip_eos(ids, policy.eos_ids)
    keep = len(ids)
    end = rule.step_end(policy.detokenize(body))
    if end is not None:
        cut = token_boundary(prefix_lengths(policy, body), end)
        if cut < len(body):  # the step ends before the end of what was generated
            keep = cut
    keep = min(keep, draft.cap)
    # Finished by the policy only if its end token survived the cuts.
    by_eos = draft.reason == "eos" and len(body) < len(ids) and keep == len(ids)
    remaining = _remaining_answer(draft.parent, max_answer_tokens)
    at_cap = remaining is not None and keep >= remaining
    reason = "eos" if by_eos else "length" if at_cap else ""
    step_ids = tuple(ids[:keep])
    child = draft.parent.extend(policy.detokenize(step_ids), step_ids, finished=bool(reason), finish_reason=reason)
    return dataclasses.replace(child, info={"discarded_tokens": len(ids) - keep})


# ------------------------------------------------------------------------------------ complete
def complete(
    policy: Sampler,
    states: Sequence[State],
    rule: StepRule,
    params: SamplingParams,
    budgets: Sequence[Budget],
    max_answer_tokens: int,
    *,
    generator: torch.Generator | None = None,
) -> list[State]:
    """Finish every state to the end of its answer in one batched call (fast rollouts, best-of-N).

    The continuation is split into steps by `rule`; every returned state is finished, with the
    policy's finish reason (`eos`, `stop` for a stop string in `params.stop`, or `length` at
    `max_answer_tokens` completion tokens in all). States already finished, states whose problem's
    budget is exhausted, and states already at the cap come back unchanged (check `finished`).
    Budgets are charged as in `propose_steps`; tokens past a state's own cap count as discarded.
    """
    if max_answer_tokens < 1:
        raise ValueError(f"max_answer_tokens must be >= 1, got {max_answer_tokens}")
    remaining = [max_answer_tokens - s.num_completion_tokens for s in states]
    go = [not s.finished and not budgets[s.problem_index].exhausted and r > 0 for s, r in zip(states, remaining)]
    if not any(go):
        return list(states)
    call = dataclasses.replace(params, max_new_tokens=max(r for r, g in zip(remaining, go) if g))
    results = grouped_generate(policy, [s.token_ids for s in states], [int(g) for g in go], call, generator)
    tokens: dict[int, int] = defaultdict(int)
    out = []
    for state, r, completions in zip(states, remaining, results):
        if not completions:
            out.append(state)
            continue
        c = completions[0]
        tokens[state.problem_index] += c.num_tokens
        ids, reason = list(c.token_ids), c.finish_reason
        if len(ids) > r:
            ids, reason = ids[:r], "length"
        steps = split_ids(policy, ids, rule)
        done = state
        for i, step_ids in enumerate(steps):
            last = i == len(steps) - 1
            done = done.extend(policy.detokenize(step_ids), step_ids, finished=last, finish_reason=reason if last else "")
        out.append(dataclasses.replace(done, info={"discarded_tokens": c.num_tokens - len(ids)}))
    _charge(budgets, tokens)
    return out
