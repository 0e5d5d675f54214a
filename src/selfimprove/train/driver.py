"""The shared body of every training job: resume, step, budget, evaluate, log, checkpoint, summarise.

A method differs only in how one step turns problems into episodes and learner updates; it gives the
driver a `TrainingPlan` (its stream, its state, its step, its summary) and the driver does the rest.

Sampled-token budget: a step that samples reports the tokens it generated as `train/sampled_tokens`;
the driver keeps the running total (`Job.sampled_tokens`, saved in checkpoints) and, when the recipe
sets `max_sampled_tokens` and the plan's `budget_ends_run`, ends the run after the step that reaches
it (checkpoint, final eval and summary as at the last step). Methods compared "at the same budget" all
stop this way, or (STaR, Pair-SFT, whose SFT steps sample nothing) spend the budget in their sampling
phase and say so with `budget_ends_run = False`.

With `recipe.lora` the policy trains a LoRA adapter on the base model and the KL reference is the
same model with the adapter switched off (no second copy in memory).
"""

from __future__ import annotations

import json
import random
import shutil
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import yaml

from selfimprove.config import EngineConfig, EvalConfig
from selfimprove.eval.evaluate import EvalResult, evaluate_with
from selfimprove.rollout.conversation import env_run
from selfimprove.policy.lora import save_policy
from selfimprove.tasks.base import Task
from selfimprove.tasks.plugins import make_task
from selfimprove.errors import UserError
from selfimprove.train import distributed
from selfimprove.train.checkpoint import clean_leftovers, latest_checkpoint, latest_intact_checkpoint, load_checkpoint, save_checkpoint
from selfimprove.train.job import BUFFERS, Job, StepCallback, TrainingPlan, lora_of
from selfimprove.train.learner import Learner
from selfimprove.train.models import load_policy
from selfimprove.train.run_dir import check_run_dir, check_same_recipe, run_lock
from selfimprove.train.runlog import NullLog, RunLog
from selfimprove.train.signals import stop_at_step_end
from selfimprove.progress import note, stage
from selfimprove import timing

SUMMARY = "summary.json"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def run_eval(job: Job, config: EvalConfig, num_problems: int, seed: int, on_batch: Callable[[int], None] | None = None) -> EvalResult:
    problems = job.task.distinct_problems(config.split, num_problems, config.start)
    return evaluate_with(job.policy, job.task, problems, config, seed, on_batch, env=job.env)


def _final_eval(job: Job, config: EvalConfig, seed: int, on_step: StepCallback | None) -> EvalResult:
    """The run's final evaluation, counted on the progress bar problem by problem (greedy, then sampled)."""
    total = config.num_problems * (2 if config.samples else 1)
    done = [0]

    def on_batch(n: int) -> None:
        done[0] += n
        stage(on_step, "final eval", done[0], total)

    stage(on_step, "final eval", 0, total)
    return run_eval(job, config, config.num_problems, seed, on_batch)


def _build(plan: TrainingPlan, resume: Path | None, task: Task, run_dir: Path, ranks: distributed.Ranks) -> Job:
    recipe = plan.recipe
    lora = lora_of(recipe)
    engine = getattr(recipe, "engine", None)
    if not ranks.is_main and engine is not None and engine.kind != "hf":
        engine = EngineConfig(kind="hf")  # rank 0 samples for every rank: no second pool or vLLM on the others
    if lora is not None:  # the adapter goes on the local model before any engine is built around it
        policy = load_policy(recipe.model, engine=engine, seed=recipe.seed, lora=lora,
                             adapter=resume / "model" if resume is not None else None)
    else:
        policy = load_policy(recipe.model, engine=engine, seed=recipe.seed, path=resume / "model" if resume else None)
    reference = None
    if plan.use_reference and lora is None:
        reference = load_policy(recipe.model, seed=recipe.seed)  # frozen and only scored: in-process
    learner = Learner(
        policy,
        recipe.optim,
        recipe.steps * plan.optimizer_steps_per_step,
        reference=reference,
        adapter_reference=plan.use_reference and lora is not None,
        value_model=plan.value_model(policy),
        temperature=plan.temperature,
    )
    return Job(policy, learner, task, plan.make_stream(), plan.State(), run_dir)


def _restore(job: Job, saved: dict[str, Any]) -> None:
    """The job state of a checkpoint: budget spent, stream position, method state, buffer lengths."""
    state = saved.get("job", {})
    job.sampled_tokens = int(state.get("sampled_tokens", 0))
    job.reward_failures = int(state.get("reward_failures", 0))
    job.stream.load_state_dict(state["stream"])
    job.state = type(job.state).from_dict(state.get("method", {}))
    lengths = state.get("buffers", {})
    folder = job.run_dir / BUFFERS
    names = {p.stem for p in folder.glob("*.jsonl")} if folder.is_dir() else set()
    for name in sorted(names | set(lengths)):
        job.buffer(name).truncate(int(lengths.get(name, 0)))


def job_state(job: Job, seconds: float) -> dict[str, Any]:
    return {
        "seconds": round(seconds, 3),
        "sampled_tokens": job.sampled_tokens,
        "reward_failures": job.reward_failures,
        "stream": job.stream.state_dict(),
        "method": job.state.to_dict(),
        "buffers": {name: len(buffer) for name, buffer in sorted(job.buffers.items())},
    }


def _save_before_failing(plan: TrainingPlan, job: Job, ckpt_dir: Path, done: int, position: dict[str, Any] | None,
                         seconds: float, keep: int) -> None:
    """A checkpoint of the last finished step before a failure stops the run (a reward function that
    fails on every call, in a step or in its evaluation): a failed step's problems (`position`, the
    stream before it) are drawn again on resume. Sampling in flight that failed too is not kept (the
    resumed run samples that step again)."""
    if position is not None:
        job.stream.load_state_dict(position)
    try:
        extra = plan.checkpoint_state(job)
    except Exception:  # noqa: BLE001 - the batch in flight failed as well
        extra = None
    save_checkpoint(ckpt_dir, done, job.policy, job.learner, {"job": job_state(job, seconds)}, keep=keep, extra=extra)


def _finished(plan: TrainingPlan, run_dir: Path, resume: Path | None) -> dict[str, Any] | None:
    """The summary of a run that already ended (its last checkpoint is its last step, or spent its
    budget, and it wrote its summary and final model), or None: rerunning it changes nothing."""
    summary = run_dir / SUMMARY
    if resume is None or not summary.is_file() or not (run_dir / "final").is_dir():
        return None
    state = json.loads((resume / "state.json").read_text())
    recipe = plan.recipe
    budget = getattr(recipe, "max_sampled_tokens", None) if plan.budget_ends_run else None
    spent = budget is not None and int(state.get("job", {}).get("sampled_tokens", 0)) >= budget
    if int(state["step"]) < recipe.steps and not spent:
        return None  # more steps asked for (a longer schedule): go on
    saved = run_dir / "config.yaml"
    before = (yaml.safe_load(saved.read_text()) or {}).get("eval") if saved.is_file() else None
    if before is not None and before != recipe.eval.model_dump(mode="json"):
        return None  # other evaluation settings: no steps to run, the final evaluation again (it replaces the last)
    return {**json.loads(summary.read_text()), "already_finished": True}


def run_training(plan: TrainingPlan, on_step: StepCallback | None = None) -> dict[str, Any]:
    """Train `recipe.steps` steps (resuming from the newest intact checkpoint if any); write and return
    the summary. The run folder is checked before anything is written and locked while the run lasts.
    Under torchrun every rank runs this; rank 0 writes (`train/distributed.py`)."""
    run_dir = Path(plan.recipe.run_dir)
    ranks = distributed.setup()
    if not ranks.is_main:
        return _run(plan, run_dir, on_step, ranks)
    check_run_dir(run_dir)
    with run_lock(run_dir):
        return _run(plan, run_dir, on_step, ranks)


def _resume_point(run_dir: Path, ranks: distributed.Ranks) -> Path | None:
    """The checkpoint to resume from: rank 0 cleans up and picks the newest intact one, the others
    wait for it and take the same."""
    ckpt_dir = run_dir / "checkpoints"
    if ranks.is_main:
        clean_leftovers(ckpt_dir)
        resume = latest_intact_checkpoint(ckpt_dir)
    ranks.barrier()
    if not ranks.is_main:
        resume = latest_checkpoint(ckpt_dir)
    return resume


def _step_times(metrics: dict[str, Any], mark: float) -> float:
    """Add `time/step` (seconds since the previous step's record: the previous step's logging and
    checkpoint included) and `time/<phase>` for each phase timed in that span (`selfimprove.timing`),
    so the phases plus `time/other` sum to `time/step`. Returns the new mark."""
    now = time.perf_counter()
    phases = timing.take()
    metrics.update({f"time/{name}": round(seconds, 4) for name, seconds in sorted(phases.items())})
    metrics["time/other"] = round(now - mark - sum(phases.values()), 4)  # phases are exclusive: never negative
    metrics["time/step"] = round(now - mark, 4)
    return now


def _run(plan: TrainingPlan, run_dir: Path, on_step: StepCallback | None, ranks: distributed.Ranks) -> dict[str, Any]:
    recipe = plan.recipe
    ckpt_dir = run_dir / "checkpoints"
    job_dir = run_dir if ranks.is_main else run_dir / "ranks" / f"rank{ranks.rank}"  # other ranks' buffers
    seed_everything(recipe.seed)
    task = make_task(recipe.task.name, recipe.task.params)
    env = env_run(getattr(recipe, "env", None), task, recipe.seed)  # before the model: a bad tool fails fast
    resume = _resume_point(run_dir, ranks)
    if resume is None:
        shutil.rmtree(job_dir / BUFFERS, ignore_errors=True)  # left by a run that never checkpointed
    else:
        check_same_recipe(run_dir, recipe.model_dump(mode="json"))
    finished = _finished(plan, run_dir, resume)
    if finished is not None:
        note(on_step, f"{run_dir} already finished at step {finished['steps']} of {recipe.steps}: nothing to do "
                      f"(its summary: {run_dir / SUMMARY})")
        return finished
    job = _build(plan, resume, task, job_dir, ranks)
    job.env = env
    if ranks.world > 1:  # rank 0 samples, the others receive its rollouts
        job.policy = distributed.SharedSampling(job.policy, ranks)  # type: ignore[assignment]
    start, elapsed = 0, 0.0
    if resume is not None:
        saved = load_checkpoint(resume, job.policy, job.learner)
        start = int(saved["step"])
        elapsed = float(saved.get("job", {}).get("seconds", 0.0))
        note(on_step, f"resuming from step {start} of {recipe.steps} ({resume})")
        _restore(job, saved)
        if saved.get("plan") is not None:
            plan.restore_checkpoint_state(job, saved["plan"])
    log: RunLog | NullLog = (RunLog(run_dir, recipe, resume_step=start if resume is not None else None, elapsed=elapsed)
                             if ranks.is_main else NullLog())
    schedule = recipe.schedule
    began = time.time() - elapsed
    budget = getattr(recipe, "max_sampled_tokens", None) if plan.budget_ends_run else None
    done = start
    timing.take()  # phases before the first step (loading, resuming) are not a step's
    mark = time.perf_counter()
    try:
        with stop_at_step_end() as stop:
            for step in range(start, recipe.steps):
                if budget is not None and job.sampled_tokens >= budget:
                    break  # resumed after the budget was spent
                position = job.stream.state_dict()
                try:
                    metrics = plan.step(job, step)
                except UserError as err:
                    if getattr(err, "checkpoint_first", False) and ranks.is_main and done > start:
                        _save_before_failing(plan, job, ckpt_dir, done, position, time.time() - began, schedule.keep_checkpoints)
                    raise
                done = step + 1
                job.sampled_tokens += int(metrics.get("train/sampled_tokens", 0))
                job.reward_failures += int(metrics.get("train/reward_failures", 0))
                metrics["train/sampled_tokens_total"] = job.sampled_tokens
                last = ranks.any_rank(done == recipe.steps or (budget is not None and job.sampled_tokens >= budget))
                if schedule.eval_every and done % schedule.eval_every == 0 and not last:
                    try:
                        with timing.phase("eval"):
                            evaluated = run_eval(job, recipe.eval, schedule.eval_problems, recipe.seed)
                        metrics.update(evaluated.metrics())
                    except UserError as err:  # the step itself finished: keep it
                        if getattr(err, "checkpoint_first", False) and ranks.is_main:
                            _save_before_failing(plan, job, ckpt_dir, done, None, time.time() - began, schedule.keep_checkpoints)
                        raise
                metrics["seconds"] = round(time.time() - began, 3)
                mark = _step_times(metrics, mark)
                with timing.phase("log"):
                    log.log(done, metrics)
                if on_step is not None:
                    on_step(done, metrics)
                stopping = ranks.any_rank(stop.requested)  # a signal that reached one rank stops them all
                if (done % schedule.checkpoint_every == 0 or last or stopping) and ranks.is_main:
                    with timing.phase("checkpoint"):
                        extra = plan.checkpoint_state(job)  # first: it may wait for sampling in flight (RNG, stream)
                        save_checkpoint(ckpt_dir, done, job.policy, job.learner, {"job": job_state(job, time.time() - began)},
                                        keep=schedule.keep_checkpoints, extra=extra)
                if stopping:
                    raise stop.interrupt()  # SIGTERM or Ctrl-C: the step is finished and saved
                if last:
                    break
        final = _final_eval(job, recipe.eval, recipe.seed, on_step)
        if start == done and resume is not None:  # a finished run evaluated again (other eval settings)
            log.forget("final/")
        log.log(done, {f"final/{k.split('/', 1)[1]}": v for k, v in final.metrics().items()})
    finally:
        log.close()
        plan.close(job)  # a rollout thread stops before the engine it samples on
        close = getattr(job.policy, "close", None)  # a pool of workers (engine.kind ray) frees its CPUs
        if close is not None:
            close()
    lora = lora_of(recipe)
    if ranks.is_main:
        save_policy(job.policy, run_dir / "final", merged=bool(lora and lora.save_merged))
        if job.learner.value_model is not None:  # PPO's critic, for reuse (e.g. as a search value function)
            torch.save(job.learner.value_model.state_dict(), run_dir / "final" / "value_model.pt")
    summary = {
        "method": getattr(plan, "name", None),
        "steps": done,
        "sampled_tokens": job.sampled_tokens,
        "reward_failures": job.reward_failures,
        "accuracy": final.accuracy,
        "pass_at_k": final.pass_at_k,
        "eval": final.metrics("final"),  # every final metric (strict/lenient, pass@k, maj@k, avg@n)
        "eval_sampling": final.sampling,
        "eval_problems": final.num_problems,
        "train_seconds": round(time.time() - began, 1),
        "model": str(run_dir / "final"),
        **plan.summarise(job),
    }
    if ranks.is_main:
        (run_dir / SUMMARY).write_text(json.dumps(summary, indent=2))
        (run_dir / "eval_samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in final.all_records()))
    ranks.barrier()  # the others return once rank 0 has written the run
    return summary
