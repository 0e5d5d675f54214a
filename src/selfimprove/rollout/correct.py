"""Two-attempt episodes for self-correction (SCoRe, SPECS §2).

x1 = prompt; y1 ~ pi(.|x1); x2 = [x1, y1, p] with a fixed instruction p that never says whether y1
was right; y2 ~ pi(.|x2). Both attempts are trainable segments of one episode, each with its own
verifier reward and its own per-token KL weight (SCoRe Stage I puts a strong KL on turn 1), so a
method turns them into per-turn advantages without a second episode type.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

from selfimprove.policy.base import SamplingParams
from selfimprove.policy.base import Sampler
from selfimprove.tasks.base import Problem, Task

if TYPE_CHECKING:
    from selfimprove.rollout.episode import Episode

# The paper's instruction, and a short one the character-level tiny model can learn as a layout.
PAPER_INSTRUCTION = (
    "\nThere might be an error in the solution above because of lack of understanding of the question. "
    "Please correct the error, if any, and rewrite the solution.\n"
)
SHORT_INSTRUCTION = "\nagain:"

# The segment kinds of the two attempts (SCoRe's turns; STaR and Pair-SFT train the second).
TURN1 = "attempt1"
TURN2 = "attempt2"


@dataclass(frozen=True)
class TurnWeights:
    """Per-token KL weight of each attempt (e.g. Stage I: beta2 / beta1 on turn 1, 1 on turn 2)."""

    first: float = 1.0
    second: float = 1.0


def two_attempt_episodes(
    policy: Sampler,
    task: Task,
    problems: Sequence[Problem],
    params: SamplingParams,
    *,
    instruction: str = SHORT_INSTRUCTION,
    kl_weights: TurnWeights = TurnWeights(),
    group_offset: int = 0,
) -> list[Episode]:
    """`params.n` two-attempt episodes per problem (one group per problem), both attempts verified.

    The second attempt is sampled once per first attempt with the same settings. `Episode.reward` is
    the second attempt's score; segment rewards hold each turn's own score for per-turn shaping.
    """
    from selfimprove.rollout.episode import Episode, Segment

    first = policy.generate([p.prompt for p in problems], params)
    instruction_ids = policy.encode_completion(instruction, add_eos=False)
    eos = policy.eos_ids
    bodies = [c.without_eos(eos) for c in first]
    contexts = [list(c.prompt_ids) + body + instruction_ids for c, (body, _) in zip(first, bodies)]
    second = policy.generate_ids(contexts, SamplingParams(
        n=1, temperature=params.temperature, top_p=params.top_p, max_new_tokens=params.max_new_tokens, stop=params.stop
    ))
    episodes = []
    for c1, (body, body_lp), c2 in zip(first, bodies, second):
        problem = problems[c1.prompt_index]
        v1 = task.verify(problem, c1.text)
        v2 = task.verify(problem, c2.text)
        episodes.append(
            Episode(
                segments=[
                    Segment("prompt", list(c1.prompt_ids)),
                    Segment(TURN1, body, trainable=True, reward=v1.score, logprobs=body_lp,
                            kl_weights=[kl_weights.first] * len(body), text=c1.text),
                    Segment("instruction", instruction_ids, text=instruction),
                    Segment(TURN2, list(c2.token_ids), trainable=True, reward=v2.score, logprobs=list(c2.logprobs),
                            kl_weights=[kl_weights.second] * len(c2.token_ids), text=c2.text),
                ],
                group=group_offset + c1.prompt_index,
                problem_id=problem.id,
                reward=v2.score,
                info={"correct1": v1.correct, "correct2": v2.correct, "reason1": v1.reason, "reason2": v2.reason,
                      "correct": v2.correct, "finish_reason": c2.finish_reason},
            )
        )
    return episodes
