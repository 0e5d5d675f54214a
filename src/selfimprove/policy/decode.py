"""A lean batched decode loop with a KV cache, for any Hugging Face causal LM.

Why not `model.generate`: we need behaviour log-probabilities of the sampled tokens, stop strings that
cut both text and tokens, our own seeded generator (for exact resume), and little per-step overhead on
small models. Prompts are left-padded; each row keeps its own position ids.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from transformers import DynamicCache, PreTrainedModel

from selfimprove.policy.base import Completion, SamplingParams


def sample_next(logits: torch.Tensor, params: SamplingParams, generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Pick one token per row; return (tokens [N], their log-probs under the temperature-scaled model)."""
    logits = logits.float()
    if params.greedy:
        logp = torch.log_softmax(logits, dim=-1)
        tokens = logits.argmax(dim=-1)
        return tokens, logp.gather(-1, tokens[:, None]).squeeze(-1)
    logp = torch.log_softmax(logits / params.temperature, dim=-1)
    probs = logp.exp()
    if params.top_p < 1.0:
        sorted_p, order = probs.sort(dim=-1, descending=True)
        # Keep the smallest prefix whose mass reaches top_p (always at least the top token).
        drop = (sorted_p.cumsum(-1) - sorted_p) >= params.top_p
        sorted_p = sorted_p.masked_fill(drop, 0.0)
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_p)
    tokens = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
    return tokens, logp.gather(-1, tokens[:, None]).squeeze(-1)


@torch.no_grad()
def decode(
    model: PreTrainedModel,
    prompt_ids: Sequence[Sequence[int]],
    params: SamplingParams,
    *,
    pad_id: int,
    eos_ids: Sequence[int],
    detokenize: Callable[[list[int]], str],
    generator: torch.Generator | None = None,
) -> list[Completion]:
    """Sample `params.n` completions for every prompt (prompt-major order) in one batch."""
    device = model.device
    rows = [list(p) for p in prompt_ids for _ in range(params.n)]
    index = [i for i in range(len(prompt_ids)) for _ in range(params.n)]
    if not rows:
        return []
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        input_ids[i, width - len(r) :] = torch.tensor(r, dtype=torch.long)
        attention[i, width - len(r) :] = 1
    input_ids, attention = input_ids.to(device), attention.to(device)
    positions = (attention.cumsum(-1) - 1).clamp(min=0)

    eos = torch.tensor(list(eos_ids), dtype=torch.long, device=device)
    cache = DynamicCache()
    out = model(input_ids=input_ids, attention_mask=attention, position_ids=positions, past_key_values=cache, use_cache=True)
    next_logits = out.logits[:, -1, :]
    last_pos = positions[:, -1]

    n = len(rows)
    tokens: list[list[int]] = [[] for _ in range(n)]
    logps: list[list[float]] = [[] for _ in range(n)]
    reasons: list[str] = ["length"] * n
    done = torch.zeros(n, dtype=torch.bool, device=device)
    max_stop = max((len(s) for s in params.stop), default=0)

    for step in range(params.max_new_tokens):
        tok, lp = sample_next(next_logits, params, generator)
        tok = torch.where(done, torch.full_like(tok, pad_id), tok)
        tok_list, lp_list, done_list = tok.tolist(), lp.tolist(), done.tolist()
        for i in range(n):
            if done_list[i]:
                continue
            tokens[i].append(tok_list[i])
            logps[i].append(lp_list[i])
        hit_eos = torch.isin(tok, eos) & ~done
        for i in hit_eos.nonzero().flatten().tolist():
            reasons[i] = "eos"
        done = done | hit_eos
        if params.stop:
            for i in (~done).nonzero().flatten().tolist():
                tail = detokenize(tokens[i][-(max_stop + 2) :])
                if any(s in tail for s in params.stop):
                    reasons[i] = "stop"
                    done[i] = True
        if bool(done.all()) or step == params.max_new_tokens - 1:
            break
        attention = torch.cat([attention, torch.ones((n, 1), dtype=attention.dtype, device=device)], dim=1)
        last_pos = last_pos + 1
        out = model(
            input_ids=tok[:, None],
            attention_mask=attention,
            position_ids=last_pos[:, None],
            past_key_values=cache,
            use_cache=True,
        )
        next_logits = out.logits[:, -1, :]

    completions = []
    for i in range(n):
        ids = tokens[i]
        body = ids[:-1] if reasons[i] == "eos" else ids
        text = detokenize(body)
        if reasons[i] == "stop":
            cut = min((text.find(s) for s in params.stop if s in text), default=-1)
            text = text[:cut] if cut >= 0 else text
        completions.append(Completion(index[i], list(prompt_ids[index[i]]), ids, text, logps[i], reasons[i]))  # type: ignore[arg-type]
    return completions
