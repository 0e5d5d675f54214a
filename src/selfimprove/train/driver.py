"""The shared body of every training job: resume, step, evaluate, log, checkpoint, save.

A job differs only in how one step turns problems into episodes and learner updates (`StepFn`);
SFT and the RL loop both run through `run_training`.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

import numpy as np
import torch

from selfimprove.config import EvalConfig, ModelConfig, OptimConfig, Schedule, TaskSpec
from selfimprove.eval.evaluate import EvalResult, evaluate
from selfimprove.policy.hf import HFPolicy
from selfimprove.policy.load import load_policy
from selfimprove.policy.lora import apply_lora, load_adapter, save_policy
from selfimprove.policy.value import ValueModel
from selfimprove.tasks.base import Task, make_task
from selfimprove.train.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from selfimprove.train.learner import Learner
from selfimprove.train.runlog import RunLog

StepCallback = Callable[[int, dict[str, Any]], None]


class TrainingRecipe(Protocol):
    run_dir: str
    seed: int
    steps: int
    model: ModelConfig
    task: TaskSpec
    optim: OptimConfig
    schedule: Schedule
    eval: EvalConfig


@dataclass
class Job:
    """What a step function may use. `state` is saved in every checkpoint and restored on resume
    (e.g. a data cursor that does not follow from the step number)."""

    policy: HFPolicy
    learner: Learner
    task: Task
    state: dict[str, Any] = field(default_factory=dict)


class StepFn(Protocol):
    def __call__(self, job: Job, step: int) -> dict[str, Any]:
        """Run training step `step` (0-based) and return its metrics."""


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def run_eval(job: Job, config: EvalConfig, num_problems: int, seed: int, on_batch: Callable[[int], None] | None = None) -> EvalResult:
    problems = job.task.distinct_problems(config.split, num_problems)
    return evaluate(
        job.policy,
        job.task,
        problems,
        batch_size=config.batch_size,
        max_new_tokens=config.max_new_tokens,
        samples=config.samples,
        temperature=config.temperature,
        pass_k=config.pass_k,
        seed=seed,
        on_batch=on_batch,
    )


def run_training(
    recipe: TrainingRecipe,
    step_fn: StepFn,
    *,
    use_reference: bool = False,
    value_model: Callable[[HFPolicy], ValueModel] | None = None,
    temperature: float = 1.0,
    optimizer_steps_per_step: int = 1,
    on_step: StepCallback | None = None,
) -> dict[str, Any]:
    """Train `recipe.steps` steps (resuming from the newest checkpoint if any); return the summary.

    Sampled-token budget: a step function that samples reports the tokens it generated as the
    metric `train/sampled_tokens`; the driver keeps the running total in `job.state` (so it survives
    resume) and, when the recipe sets `max_sampled_tokens`, ends the run after the step that reaches it
    (checkpoint, final eval and summary as at the last step). Methods compared "at the same budget"
    all stop this way.

    With `recipe.lora` the policy trains a LoRA adapter on the base model and the KL reference is the
    same model with the adapter switched off (no second copy in memory).
    """
    run_dir = Path(recipe.run_dir)
    ckpt_dir = run_dir / "checkpoints"
    seed_everything(recipe.seed)
    task = make_task(recipe.task.name, recipe.task.params)
    resume = latest_checkpoint(ckpt_dir)
    lora = getattr(recipe, "lora", None)
    if lora is not None:
        policy = load_policy(recipe.model, seed=recipe.seed)
        if resume is not None:
            load_adapter(policy, resume / "model")
        else:
            apply_lora(policy, lora)
    else:
        policy = load_policy(recipe.model, seed=recipe.seed, path=resume / "model" if resume else None)
    reference = None
    if use_reference and lora is None:
        reference = load_policy(recipe.model, seed=recipe.seed)
    learner = Learner(
        policy,
        recipe.optim,
        recipe.steps * optimizer_steps_per_step,
        reference=reference,
        adapter_reference=use_reference and lora is not None,
        value_model=value_model(policy) if value_model is not None else None,
        temperature=temperature,
    )
    start = 0
    job = Job(policy, learner, task)
    if resume is not None:
        saved = load_checkpoint(resume, policy, learner)
        start = int(saved["step"])
        job.state.update(saved.get("job", {}))
    log = RunLog(run_dir, recipe, resume_step=start if resume is not None else None)  # type: ignore[arg-type]
    schedule = recipe.schedule
    began = time.time()
    budget = getattr(recipe, "max_sampled_tokens", None)
    done = start
    try:
        for step in range(start, recipe.steps):
            if budget is not None and int(job.state.get("sampled_tokens", 0)) >= budget:
                break  # resumed after the budget was spent
            metrics = step_fn(job, step)
            done = step + 1
            spent = int(job.state.get("sampled_tokens", 0)) + int(metrics.get("train/sampled_tokens", 0))
            job.state["sampled_tokens"] = spent
            metrics["train/sampled_tokens_total"] = spent
            last = done == recipe.steps or (budget is not None and spent >= budget)
            if schedule.eval_every and done % schedule.eval_every == 0 and not last:
                metrics.update(run_eval(job, recipe.eval, schedule.eval_problems, recipe.seed).metrics())
            metrics["seconds"] = round(time.time() - began, 3)
            log.log(done, metrics)
            if on_step is not None:
                on_step(done, metrics)
            if done % schedule.checkpoint_every == 0 or last:
                save_checkpoint(ckpt_dir, done, policy, learner, {"job": job.state}, keep=schedule.keep_checkpoints)
            if last:
                break
        final = run_eval(job, recipe.eval, recipe.eval.num_problems, recipe.seed)
        log.log(done, {f"final/{k.split('/', 1)[1]}": v for k, v in final.metrics().items()})
    finally:
        log.close()
    save_policy(policy, run_dir / "final", merged=bool(lora and lora.save_merged))
    if learner.value_model is not None:  # PPO's critic, for reuse (e.g. as a search value function)
        torch.save(learner.value_model.state_dict(), run_dir / "final" / "value_model.pt")
    summary = {
        "steps": done,
        "sampled_tokens": int(job.state.get("sampled_tokens", 0)),
        "accuracy": final.accuracy,
        "pass_at_k": final.pass_at_k,
        "eval_problems": final.num_problems,
        "train_seconds": round(time.time() - began, 1),
        "model": str(run_dir / "final"),
    }
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    (run_dir / "eval_samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in final.records))
    return summary
