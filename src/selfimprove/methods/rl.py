"""On-policy RL on the verifier's reward: GRPO, Dr.GRPO, RLOO, REINFORCE++, PPO (SPECS §1).

One method serves them all: sample a group of answers per prompt, score them, turn rewards into
advantages with the recipe's registered estimator, update. The recipe picks the estimator, the
surrogate and its aggregation, where the KL goes (loss or reward), how many passes and minibatches
each rollout batch gets, the critic for estimators that need one (PPO's GAE), and DAPO's dynamic
sampling and soft overlong penalty. `collect` is shared with online DPO.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Callable, Sequence

from selfimprove.config import ConfigError, DPORecipe, RLRecipe
from selfimprove.methods.base import Method, register_method
from selfimprove.timing import phase

if TYPE_CHECKING:  # loaded when a run starts (see methods/__init__.py)
    from selfimprove.policy.base import Sampler, SamplingParams, TrainableModel
    from selfimprove.policy.value import ValueModel
    from selfimprove.rollout.episode import Episode
    from selfimprove.train.job import Job, StepCallback


logger = logging.getLogger(__name__)

ROLLOUTS = "rollouts"  # the buffer of every trained episode (`selfimprove export` reads it)
PAIRS = "preference_pairs"  # the buffer of preference pairs (online DPO)


def informative(episodes: Sequence[Episode]) -> list[Episode]:
    """DAPO dynamic sampling: keep only groups whose rewards differ (the others have zero advantage)."""
    rewards: dict[int, set[float]] = {}
    for e in episodes:
        rewards.setdefault(e.group, set()).add(e.reward)
    return [e for e in episodes if len(rewards[e.group]) > 1]


def solved_groups(episodes: Sequence[Episode]) -> float:
    """Fraction of prompts with at least one correct sample (GRPO learns only from mixed groups)."""
    groups: dict[int, bool] = {}
    for e in episodes:
        groups[e.group] = groups.get(e.group, False) or bool(e.info["correct"])
    return sum(groups.values()) / max(1, len(groups))


def sample(job: Job, sampler: Sampler, problems: Sequence[Any], params: SamplingParams, start: int) -> list[Episode]:
    """`params.n` episodes per problem: completions judged by the task, or, with the recipe's environment,
    whole conversations judged by it."""
    if job.env is not None:
        from selfimprove.rollout.conversation import run_conversations

        return run_conversations(sampler, job.env.env, problems, params, job.env.limits(params.max_new_tokens),
                                 group_offset=start)
    from selfimprove.rollout.single import sample_episodes

    return sample_episodes(sampler, job.task, problems, params, group_offset=start)


def collect(job: Job, recipe: RLRecipe | DPORecipe, params: SamplingParams) -> tuple[list[Episode], dict[str, float]]:
    """Sample `prompts_per_step` groups from the job's stream (a group's id is its stream position);
    with dynamic sampling, refill until that many groups have mixed rewards."""
    per_step = recipe.prompts_per_step
    episodes: list[Episode] = []
    sampled: list[Episode] = []
    rounds = 1 + (recipe.sampling.max_refills if recipe.sampling.dynamic else 0)
    for _ in range(rounds):
        need = per_step - len({e.group for e in episodes})
        if need <= 0:
            break
        drawn = job.stream.take(job.task, need)
        fresh = sample(job, job.policy, drawn.problems, params, drawn.start)
        sampled += fresh
        episodes += informative(fresh) if recipe.sampling.dynamic else fresh
    if not episodes:  # every group was uniform: train on the last round anyway (zero advantages)
        episodes = sampled[-per_step * params.n :]
    return episodes, rollout_stats(sampled)


def rollout_stats(sampled: Sequence[Episode]) -> dict[str, float]:
    """What a step logs about the episodes it sampled; with reward functions also each function's mean
    (`train/reward/<name>`, over the completions it gave a value) and the completions for which a call
    failed (`train/reward_failures`)."""
    return {**reward_parts(sampled), **conversation_stats(sampled), **{
        "train/reward": sum(e.reward for e in sampled) / len(sampled),
        "train/accuracy": sum(bool(e.info["correct"]) for e in sampled) / len(sampled),
        "train/solved_groups": solved_groups(sampled),
        "train/sampled_groups": float(len({e.group for e in sampled})),
        "train/completion_tokens": sum(e.num_trainable for e in sampled) / len(sampled),
        "train/sampled_tokens": float(sum(e.info.get("sampled_tokens", e.num_trainable) for e in sampled)),
        "train/truncated": sum(e.info["finish_reason"] == "length" for e in sampled) / len(sampled),
    }}


def conversation_stats(sampled: Sequence[Episode]) -> dict[str, float]:
    """For conversations with an environment: turns, tool calls and failed calls per conversation, and
    the share that a limit (turns, tokens, context) ended rather than the environment."""
    talks = [e for e in sampled if "turns" in e.info]
    if not talks:
        return {}
    n = len(talks)
    return {"train/turns": sum(e.info["turns"] for e in talks) / n,
            "train/tool_calls": sum(e.info["tool_calls"] for e in talks) / n,
            "train/tool_errors": sum(e.info["tool_errors"] for e in talks) / n,
            "train/cut_by_limit": sum(e.info["end"] != "done" for e in talks) / n}


def reward_parts(sampled: Sequence[Episode]) -> dict[str, float]:
    scored = [e.info["rewards"] for e in sampled if "rewards" in e.info]
    if not scored:
        return {}
    out = {"train/reward_failures": float(sum(bool(e.info.get("reward_failed")) for e in sampled))}
    for name in sorted({n for parts in scored for n in parts}):
        values = [v for parts in scored if (v := parts.get(name)) is not None]
        if values:
            out[f"train/reward/{name}"] = sum(values) / len(values)
    return out


def ahead(job: Job, recipe: RLRecipe, params: SamplingParams) -> Callable[[Sampler], Callable[[], tuple[list[Episode], dict[str, float]]]]:
    """For asynchronous rollouts: draw a step's problems now (main thread), sample them later with the
    given sampler (the rollout thread)."""

    def submit(sampler: Sampler) -> Callable[[], tuple[list[Episode], dict[str, float]]]:
        drawn = job.stream.take(job.task, recipe.prompts_per_step)

        def run() -> tuple[list[Episode], dict[str, float]]:
            episodes = sample(job, sampler, drawn.problems, params, drawn.start)
            return episodes, rollout_stats(episodes)

        return run

    return submit


class PolicyGradientMethod(Method[RLRecipe]):
    """What every method trained by the shared `prepare` / `update` has in common: a reference model when
    the loss has a KL, the critic its estimator needs, log-probs at the sampling temperature and
    `epochs x minibatches` learner steps per driver step."""

    Recipe = RLRecipe
    supports_async = False  # a method whose steps sample through `ahead` may set it

    def __init__(self, recipe: RLRecipe) -> None:
        from selfimprove.train.objectives import PolicyGradientObjective

        super().__init__(recipe)
        self.params = recipe.sampling.params()
        off_policy = recipe.asynchronous is not None and recipe.asynchronous.max_staleness > 0
        if off_policy and not self.supports_async:
            raise ConfigError(f"async: {self.name} samples in its own way; asynchronous rollouts are for `selfimprove train` (rl)")
        self.objective = PolicyGradientObjective(self.loss, max_len=self.max_len, off_policy=off_policy)
        if recipe.sampling.top_p < 1 and (off_policy or self.loss.rollout_correction.kind != "none"):
            logger.warning("sampling.top_p %g < 1: the sampler's policy is the nucleus, the learner's the full distribution, "
                           "so their ratio holds the nucleus' mass (train/rollout_kl > 0 even on-policy) and the ratio "
                           "or correction weights it; RL here usually samples with top_p 1", recipe.sampling.top_p)
        self.rollouts: Any = None  # asynchronous rollouts (RL only), started on the first step

    @property
    def max_len(self) -> int:
        """The most tokens an episode's model may write: one completion, or a conversation's token limit."""
        env, per_turn = self.recipe.env, self.recipe.sampling.max_new_tokens
        if env is None:
            return per_turn
        return env.conversation_tokens(per_turn)

    @property
    def loss(self):  # type: ignore[no-untyped-def]
        return self.recipe.loss

    @property
    def use_reference(self) -> bool:
        return self.loss.kl_coef > 0

    @property
    def temperature(self) -> float:
        return self.recipe.sampling.temperature or 1.0

    @property
    def optimizer_steps_per_step(self) -> int:
        return self.loss.epochs * self.loss.minibatches

    def value_model(self, policy: TrainableModel) -> ValueModel | None:
        from selfimprove.train.models import value_model

        return value_model(self.recipe.value, self.recipe.model, policy)

    def learn(self, job: Job, episodes: Sequence[Episode], step: int) -> dict[str, float]:
        """Shape rewards, prepare the batch (the registered estimator) and update: the shared tail of a step.
        The step's episodes go to the run's `rollouts` buffer first (`schedule.save_rollouts`)."""
        from selfimprove.rollout.episode import collate
        from selfimprove.train.update import prepare, shape_rewards, update

        if self.recipe.schedule.save_rollouts:
            with phase("rollouts"):
                job.buffer(ROLLOUTS).extend(e.record(step, job.policy.detokenize) for e in episodes)
        shape_rewards(episodes, self.loss, self.max_len)
        batch = collate(episodes, job.policy.pad_id)
        prepare(job.learner, batch, self.loss)
        metrics = update(job.learner, batch, self.objective, self.loss, self.recipe.seed, step)
        metrics["train/shaped_reward"] = float(batch.rewards.mean())
        return metrics


@register_method
class RL(PolicyGradientMethod):
    name = "rl"
    command = "train"
    supports_async = True
    supports_env = True
    help = "RL on a task's verifier: GRPO, Dr.GRPO, RLOO, REINFORCE++, PPO, DAPO options"

    def label(self) -> str:
        return self.recipe.loss.estimator

    def step(self, job: Job, step: int) -> dict[str, Any]:
        config = self.recipe.asynchronous
        if config is None or config.max_staleness == 0:
            episodes, metrics = collect(job, self.recipe, self.params)
        else:
            budget = self.recipe.max_sampled_tokens

            def ends_run(result: tuple[list[Episode], dict[str, float]]) -> bool:  # this step spends the token budget
                return budget is not None and job.sampled_tokens + int(result[1]["train/sampled_tokens"]) >= budget

            with phase("rollout_wait"):  # the rollout thread samples; this is the wait for its batch
                (episodes, metrics), staleness = self._rollouts(job).next(step, ahead(job, self.recipe, self.params), ends_run)
            metrics = dict(metrics)  # a batch restored from a checkpoint is not changed in place
            metrics["train/staleness"] = float(staleness)
        metrics.update(self.learn(job, episodes, step))
        return metrics

    def _rollouts(self, job: Job) -> Any:
        """The asynchronous sampler, started on the first step (or on resume)."""
        if self.rollouts is None:
            from selfimprove.train import distributed
            from selfimprove.train.async_rollouts import AsyncRollouts

            if distributed.current().world > 1:  # a rollout thread's broadcasts would interleave with the gradients'
                raise ConfigError("async: asynchronous rollouts do not run under torchrun; use async.max_staleness 0 "
                                  "(rank 0 samples for every rank) or one process")
            config = self.recipe.asynchronous
            self.rollouts = AsyncRollouts(job.policy, config.max_staleness, self.recipe.seed, last_step=self.recipe.steps - 1)
        return self.rollouts

    def checkpoint_state(self, job: Job) -> Any:
        return {"async": self.rollouts.state_dict()} if self.rollouts is not None else None

    def restore_checkpoint_state(self, job: Job, state: Any) -> None:
        if state and state.get("async") is not None:
            self._rollouts(job).load_state_dict(state["async"])

    def close(self, job: Job) -> None:
        if self.rollouts is not None:
            self.rollouts.close()


def run_rl(recipe: RLRecipe, on_step: StepCallback | None = None) -> dict[str, Any]:
    return RL(recipe).run(on_step)
