"""Imagination (AlphaLLM, SPECS §5): new training prompts made from seed problems, validated and
deduplicated before any search spends a token on them.

- `rewrite`: the task rewrites seeds (`Task.rewrite`: Countdown changes a number and draws a reachable
  target; chain redraws the operands) — cheap, and valid by construction.
- `policy`: the model writes new problems with a few seeds in its context (MetaMath style). The layout
  is `IMAGINE_MARKER` followed by the seeds' prompts, one per line, and the model writes one more; the
  tiny model learns it during SFT (`imagine_episodes`, used by the SFT recipe's `imagine` option), an
  instruct model gets the same content as a chat turn. Each proposal's first line goes to
  `Task.problem_from_prompt`, which parses and validates it (Countdown: numbers and target in range,
  target reachable by the exact solver); tasks that cannot validate refuse with a clear error.
- `none`: the ablation.

Every proposal is counted: proposed, malformed (not a valid problem), duplicate (a seed, the same round,
or an earlier round, by `Task.key`), test (it would belong to the test split: never trained on), kept.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Literal, Sequence

from pydantic import Field

from selfimprove.config import Strict
from selfimprove.policy.base import Sampler, SamplingParams
if TYPE_CHECKING:  # loaded when a run starts, not when a recipe is validated
    from selfimprove.rollout.episode import Episode
from selfimprove.tasks.base import Problem, Task

__all__ = ["IMAGINE_MARKER", "ImagineConfig", "ImagineStats", "imagine", "imagine_episodes", "imagine_prompt"]

IMAGINE_MARKER = "new problems:\n"
CHAT_INSTRUCTION = "Here are some problems. Write one new problem of the same kind, in the same format, and nothing else.\n\n"


class ImagineConfig(Strict):
    """How a round imagines new prompts (`imagine:` in the AlphaLLM recipe)."""

    kind: Literal["none", "rewrite", "policy"] = "rewrite"
    per_round: int = Field(128, ge=0)  # imagined prompts wanted per round (kept, after validation)
    max_proposals: int = Field(4, ge=1)  # proposals per wanted prompt before the round gives up
    seeds_in_prompt: int = Field(2, ge=1)  # `policy`: seed prompts shown to the model
    temperature: float = Field(1.0, gt=0.0)  # `policy`: sampling temperature
    max_new_tokens: int = Field(24, ge=1)  # `policy`: tokens per proposal


@dataclass
class ImagineStats:
    proposed: int = 0
    malformed: int = 0
    duplicate: int = 0
    test: int = 0
    kept: int = 0
    tokens: int = 0  # tokens the policy generated to propose (0 for `rewrite`)
    examples: list[str] = field(default_factory=list)  # a few kept prompts, for people reading summaries

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def imagine_prompt(seeds: Sequence[Problem], *, chat: bool = False) -> str:
    """The context a model imagines from: the marker and one seed prompt per line (the chat form adds an
    instruction). Prompts end with a newline, so the model's first line is its proposal."""
    body = IMAGINE_MARKER + "".join(p.prompt.rstrip("\n") + "\n" for p in seeds)
    return CHAT_INSTRUCTION + body if chat else body


def imagine_episodes(sampler: Sampler, problems: Sequence[Problem], rng: random.Random, seeds_in_prompt: int,
                     *, group_offset: int = 0) -> list[Episode]:
    """SFT episodes that teach the imagination layout: `seeds_in_prompt` pool problems as context, one
    more pool problem's prompt as the (trainable) proposal. The proposals are real problems, so the model
    learns the format and the valid ranges, not new answers."""
    from selfimprove.rollout.episode import Episode, Segment

    out = []
    for k, target in enumerate(problems):
        others = [p for p in problems if p.prompt != target.prompt] or list(problems)
        seeds = [others[rng.randrange(len(others))] for _ in range(seeds_in_prompt)]
        proposal = target.prompt.rstrip("\n")
        out.append(Episode(
            [Segment("prompt", sampler.encode_prompt(imagine_prompt(seeds))),
             Segment("proposal", sampler.encode_completion(proposal + "\n"), trainable=True, reward=1.0, text=proposal)],
            group=group_offset + k, problem_id=target.id, reward=1.0, info={"layout": "imagine"},
        ))
    return out


def _accept(task: Task, problem: Problem | None, seen: set[str], stats: ImagineStats, out: list[Problem]) -> None:
    stats.proposed += 1
    if problem is None:
        stats.malformed += 1
        return
    key = task.key(problem)
    if key in seen:
        stats.duplicate += 1
    elif task.in_test_split(problem):
        stats.test += 1
    else:
        seen.add(key)
        out.append(problem)
        stats.kept += 1
        if len(stats.examples) < 5:
            stats.examples.append(problem.prompt.rstrip("\n"))


def imagine(
    config: ImagineConfig,
    task: Task,
    seeds: Sequence[Problem],
    *,
    seen: set[str],
    prefix: str,
    seed: int,
    sampler: Sampler | None = None,
    chat: bool = False,
) -> tuple[list[Problem], ImagineStats]:
    """Up to `config.per_round` new valid problems from `seeds` (ids `prefix-0`, `prefix-1`, ...), none
    whose key is in `seen` (which gains the kept keys: pass the seeds' and earlier rounds' keys)."""
    stats = ImagineStats()
    out: list[Problem] = []
    if config.kind == "none" or config.per_round == 0 or not seeds:
        return out, stats
    rng = random.Random(f"imagine:{seed}:{prefix}")
    budget = config.per_round * config.max_proposals
    if config.kind == "rewrite":
        while len(out) < config.per_round and stats.proposed < budget:
            _accept(task, task.rewrite(seeds[rng.randrange(len(seeds))], rng, f"{prefix}-{len(out)}"), seen, stats, out)
        return out, stats
    if sampler is None:
        raise ValueError("imagine.kind 'policy' needs the policy to sample from")
    task.problem_from_prompt("", "probe")  # raises NotImplementedError for a task that cannot validate
    params = SamplingParams(n=1, temperature=config.temperature, max_new_tokens=config.max_new_tokens, stop=("\n",))
    generator = sampler.make_generator(seed)
    while len(out) < config.per_round and stats.proposed < budget:
        want = min(config.per_round - len(out), budget - stats.proposed)
        contexts = [imagine_prompt([seeds[rng.randrange(len(seeds))] for _ in range(config.seeds_in_prompt)], chat=chat)
                    for _ in range(want)]
        for c in sampler.generate(contexts, params, generator=generator):
            stats.tokens += c.num_tokens
            line = c.text.strip().split("\n", 1)[0]
            _accept(task, task.problem_from_prompt(line, f"{prefix}-{len(out)}") if line else None, seen, stats, out)
            if len(out) >= config.per_round:
                break
    return out, stats
