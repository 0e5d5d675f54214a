"""The RL loop: sample a group of answers per prompt, score them, turn rewards into advantages, update.

One loop serves GRPO, Dr.GRPO, RLOO, REINFORCE++ and PPO (SPECS §1): the recipe picks the estimator,
the loss aggregation, where the KL goes (loss or reward), how many passes and minibatches each rollout
batch gets, the critic for PPO (GAE), and DAPO's dynamic sampling and soft overlong penalty.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from selfimprove.algos.advantages import ADVANTAGES, fold_kl_into_rewards, gae_advantages, masked_whiten, token_rewards
from selfimprove.algos.losses import overlong_penalty
from selfimprove.config import DPORecipe, LossConfig, RLRecipe
from selfimprove.policy.base import SamplingParams
from selfimprove.policy.value import ValueModel
from selfimprove.rollout.episode import Episode, TokenBatch, collate
from selfimprove.rollout.single import sample_episodes
from selfimprove.train.driver import Job, StepCallback, run_training
from selfimprove.train.learner import Objective
from selfimprove.train.objectives import PolicyGradientObjective


def sampling_params(recipe: RLRecipe) -> SamplingParams:
    s = recipe.sampling
    return SamplingParams(n=s.n, temperature=s.temperature, top_p=s.top_p, max_new_tokens=s.max_new_tokens, stop=tuple(s.stop))


def informative(episodes: Sequence[Episode]) -> list[Episode]:
    """DAPO dynamic sampling: keep only groups whose rewards differ (the others have zero advantage)."""
    rewards: dict[int, set[float]] = {}
    for e in episodes:
        rewards.setdefault(e.group, set()).add(e.reward)
    return [e for e in episodes if len(rewards[e.group]) > 1]


def collect(job: Job, recipe: RLRecipe | DPORecipe, params: SamplingParams) -> tuple[list[Episode], dict[str, float]]:
    """Sample `prompts_per_step` groups from the task's train stream (cursor kept in the job state)."""
    per_step = recipe.prompts_per_step
    cursor = int(job.state.get("cursor", recipe.first_problem))
    episodes: list[Episode] = []
    sampled: list[Episode] = []
    rounds = 1 + (recipe.sampling.max_refills if recipe.sampling.dynamic else 0)
    for _ in range(rounds):
        need = per_step - len({e.group for e in episodes})
        if need <= 0:
            break
        problems = job.task.problems("train", need, start=cursor)
        fresh = sample_episodes(job.policy, job.task, problems, params, group_offset=cursor)
        cursor += need
        sampled += fresh
        episodes += informative(fresh) if recipe.sampling.dynamic else fresh
    if not episodes:  # every group was uniform: train on the last round anyway (zero advantages)
        episodes = sampled[-per_step * params.n :]
    job.state["cursor"] = cursor
    stats = {
        "train/reward": sum(e.reward for e in sampled) / len(sampled),
        "train/accuracy": sum(bool(e.info["correct"]) for e in sampled) / len(sampled),
        "train/solved_groups": _solved_groups(sampled),
        "train/sampled_groups": float(len({e.group for e in sampled})),
        "train/completion_tokens": sum(e.num_trainable for e in sampled) / len(sampled),
        "train/sampled_tokens": float(sum(e.num_trainable for e in sampled)),
        "train/truncated": sum(e.info["finish_reason"] == "length" for e in sampled) / len(sampled),
    }
    return episodes, stats


def shape_rewards(episodes: Sequence[Episode], recipe: RLRecipe) -> None:
    """DAPO's soft overlong penalty, added to each episode's reward."""
    cache = recipe.loss.overlong_cache
    if not cache:
        return
    lengths = torch.tensor([float(e.num_trainable) for e in episodes])
    penalty = overlong_penalty(lengths, max_len=recipe.sampling.max_new_tokens, cache_len=cache)
    for e, p in zip(episodes, penalty.tolist()):
        e.reward += p


def prepare(job: Job, batch: TokenBatch, recipe: RLRecipe) -> None:
    """Fill old log-probs, values, reference log-probs, advantages and returns of a rollout batch."""
    c = recipe.loss
    learner = job.learner
    if c.kl_coef > 0:
        learner.add_reference_logprobs(batch)
    if learner.value_model is not None:
        batch.old_logprobs, batch.old_values = learner.score_values(batch)
    elif c.epochs > 1 or c.minibatches > 1 or c.kl_as_reward:
        batch.old_logprobs = learner.score(job.policy, batch)
    kl = None
    rewards = batch.rewards
    if c.kl_as_reward:
        assert batch.ref_logprobs is not None
        kl = (batch.old_logprobs - batch.ref_logprobs) * batch.mask  # k1 of the sampled tokens
        if not c.token_level:
            rewards = fold_kl_into_rewards(rewards, kl, batch.mask, c.kl_coef)
    if c.estimator == "gae":
        assert batch.old_values is not None
        shaped = token_rewards(rewards, batch.mask, kl=kl, kl_coef=c.kl_coef if kl is not None else 0.0)
        advantages, batch.returns = gae_advantages(shaped, batch.old_values * batch.mask, batch.mask, c.gamma, c.lam)
        batch.advantages = masked_whiten(advantages, batch.mask)
    else:
        batch.advantages = ADVANTAGES.get(c.estimator)(
            rewards, batch.groups, batch.mask, kl=kl, kl_coef=c.kl_coef if kl is not None else 0.0, gamma=c.gamma, lam=c.lam
        )


def minibatch_order(size: int, parts: int, seed: int, step: int, epoch: int) -> list[torch.Tensor]:
    """Row indices of each minibatch: a fresh permutation per epoch, a function of (seed, step, epoch)."""
    if parts == 1:
        return [torch.arange(size)]
    g = torch.Generator().manual_seed((seed * 1_000_003 + step) * 1_009 + epoch)
    return list(torch.randperm(size, generator=g).tensor_split(parts))


def update(job: Job, batch: TokenBatch, objective: Objective, loss: LossConfig, seed: int, step: int) -> dict[str, float]:
    """`loss.epochs` passes over a rollout batch, `loss.minibatches` learner steps each (deterministic
    shuffle); returns the learner's stats averaged over the updates, as `train/...` metrics."""
    totals: dict[str, float] = {}
    updates = 0
    for epoch in range(loss.epochs):
        for rows in minibatch_order(batch.size, loss.minibatches, seed, step, epoch):
            for k, v in job.learner.step(batch.rows(rows), objective).items():
                totals[k] = totals.get(k, 0.0) + v
            updates += 1
    return {f"train/{k}": v / updates for k, v in totals.items()}


def rl_step(recipe: RLRecipe):
    params = sampling_params(recipe)
    objective = PolicyGradientObjective(recipe.loss, max_len=recipe.sampling.max_new_tokens)

    def step_fn(job: Job, step: int) -> dict[str, Any]:
        episodes, metrics = collect(job, recipe, params)
        shape_rewards(episodes, recipe)
        batch = collate(episodes, job.policy.pad_id)
        prepare(job, batch, recipe)
        metrics.update(update(job, batch, objective, recipe.loss, recipe.seed, step))
        metrics["train/shaped_reward"] = float(batch.rewards.mean())
        return metrics

    return step_fn


def _solved_groups(episodes: Sequence[Episode]) -> float:
    """Fraction of prompts with at least one correct sample (GRPO learns only from mixed groups)."""
    groups: dict[int, bool] = {}
    for e in episodes:
        groups[e.group] = groups.get(e.group, False) or bool(e.info["correct"])
    return sum(groups.values()) / max(1, len(groups))


def value_model_factory(recipe: RLRecipe):
    kind = recipe.value.kind
    if kind == "none":
        return None
    if kind == "head":
        return lambda policy: ValueModel.on_policy(policy.model)
    path = recipe.value.path or recipe.model.path
    if recipe.model.is_builtin and recipe.value.path is None:
        raise ValueError("value.kind 'separate' with a built-in tiny policy needs value.path (a model folder)")
    return lambda policy: ValueModel.separate(path)


def run_rl(recipe: RLRecipe, on_step: StepCallback | None = None) -> dict[str, Any]:
    return run_training(
        recipe,
        rl_step(recipe),
        use_reference=recipe.loss.kl_coef > 0,
        value_model=value_model_factory(recipe),
        temperature=recipe.sampling.temperature or 1.0,
        optimizer_steps_per_step=recipe.loss.epochs * recipe.loss.minibatches,
        on_step=on_step,
    )
