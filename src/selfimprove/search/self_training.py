"""Training data from the policy's own attempts, chosen by critics (AlphaLLM's data step and its
baseline, rejection-sampling fine-tuning), at a token budget per round.

- `mcts`: eta-MCTS over each prompt with the current policy and critics; the tree's answer (the
  finished path with the best outcome-critic score) is kept when that score is above `gamma`; visited
  siblings whose Q differ by more than a margin give step-level DPO pairs.
- `samples` (RFT / ReST-EM): up to `samples` complete answers per prompt, drawn until the prompt's share
  of the budget is spent; the answer the outcome critic scores highest is kept when above `gamma`; the
  best and the worst answer, when their scores differ by more than the margin, give a DPO pair.
Both spend the same tokens per prompt (`budget / prompts`), so the two data sources compare at equal
budget. No gold answer is read: the critics are learned (and optionally the gold-free tool check); the
task's verifier only reports, afterwards, how many kept paths are right.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Sequence

from pydantic import Field

from selfimprove.config import Strict
from selfimprove.critics.base import Critic
from selfimprove.policy.base import Sampler
if TYPE_CHECKING:  # loaded when a run starts, not when a recipe is validated
    from selfimprove.rollout.episode import Episode
    from selfimprove.search.mcts import MCTSConfig
from selfimprove.rollout.state import State
from selfimprove.tasks.base import Problem, Task

__all__ = ["DataConfig", "SelfData", "collect_self_data"]


class DataConfig(Strict):
    """Where a round's training paths come from and which are kept."""

    source: Literal["mcts", "samples"] = "mcts"
    gamma: float = Field(0.5, ge=0.0, lt=1.0)  # keep a path whose outcome-critic score is above this
    samples: int = Field(64, ge=1)  # `samples`: answers per prompt at most (its token share may stop it first)
    dpo_margin: float = Field(0.2, ge=0.0)  # pairs whose values differ by more than this
    problems_per_batch: int = Field(64, ge=1)  # prompts searched or sampled together


@dataclass
class SelfData:
    kept: list[Episode] = field(default_factory=list)  # one trainable path per kept prompt
    pairs: list[tuple[Episode, Episode]] = field(default_factory=list)  # (chosen, rejected)
    tokens: int = 0
    prompts: int = 0
    finished: int = 0  # prompts whose chosen answer is finished (scored by the outcome critic)
    kept_right: int = 0  # kept paths the verifier finds right (reported, never used to choose)

    def summary(self) -> dict[str, Any]:
        return {"prompts": self.prompts, "kept": len(self.kept), "pairs": len(self.pairs), "tokens": self.tokens,
                "finished": self.finished, "kept_right": self.kept_right,
                "kept_precision": self.kept_right / len(self.kept) if self.kept else 0.0}


def _path_episode(state: State, problem: Problem, score: float, group: int) -> Episode:
    from selfimprove.rollout.episode import Episode, Segment

    return Episode([Segment("prompt", list(state.prompt_ids)),
                    Segment("completion", state.completion_ids, trainable=True, reward=score, text=state.answer)],
                   group=group, problem_id=problem.id, reward=score, info={"source": "samples"})


def collect_self_data(
    policy: Sampler,
    task: Task,
    problems: Sequence[Problem],
    config: DataConfig,
    *,
    budget_tokens: int,
    search: MCTSConfig,
    value: Critic | None,
    outcome: Critic,
    seed: int,
    on_batch: Any = None,
) -> SelfData:
    """Kept paths and preference pairs for `problems` at `budget_tokens` in all (see the module doc)."""
    from selfimprove.search.best_of_n import BestOfNConfig, scored_candidates
    from selfimprove.search.mcts import mcts_trees
    from selfimprove.search.training_data import dpo_pairs, sft_episodes

    out = SelfData(prompts=len(problems))
    per_problem = max(1, budget_tokens // max(1, len(problems)))
    for start in range(0, len(problems), config.problems_per_batch):
        batch = list(problems[start : start + config.problems_per_batch])
        if config.source == "mcts":
            # keep the finished path with the best critic score (SPECS §5), whatever `final` the search
            # answers with at test time
            mcts = search.model_copy(update={"max_tokens": per_problem, "seed": seed * 1_000_003 + start, "final": "value"})
            trees, budgets = mcts_trees(policy, batch, mcts, value, outcome=outcome)
            kept = sft_episodes(trees, batch, min_score=config.gamma, group_offset=start)
            out.pairs += dpo_pairs(trees, batch, margin=config.dpo_margin, group_offset=start)
            out.finished += sum(1 for t in trees if t.answer is not None and t.answer.finished)
        else:
            sampling = BestOfNConfig(n=config.samples, samples_per_call=1, max_tokens=per_problem, temperature=search.temperature,
                                     top_p=search.top_p, max_answer_tokens=search.max_answer_tokens,
                                     step=search.step, seed=seed * 1_000_003 + start)
            budgets, candidates, scores = scored_candidates(policy, batch, sampling, outcome, None)
            kept = []
            for i, (group, group_scores) in enumerate(zip(candidates, scores)):
                done = [(s, x) for s, x in zip(group, group_scores) if s.finished]
                if not done:
                    continue
                out.finished += 1
                best = max(range(len(done)), key=lambda k: (done[k][1], -k))
                worst = min(range(len(done)), key=lambda k: (done[k][1], k))
                state, score = done[best]
                if score > config.gamma:
                    kept.append(_path_episode(state, batch[i], score, start + i))
                if done[best][1] - done[worst][1] > config.dpo_margin:
                    out.pairs.append((_path_episode(state, batch[i], score, start + i),
                                      _path_episode(done[worst][0], batch[i], done[worst][1], start + i)))
        by_id = {p.id: p for p in batch}
        out.kept_right += sum(task.verify(by_id[e.problem_id], e.segment("completion").text).correct for e in kept)
        out.kept += kept
        out.tokens += sum(b.tokens for b in budgets)
        if on_batch is not None:
            on_batch(min(len(problems), start + len(batch)))
    return out
