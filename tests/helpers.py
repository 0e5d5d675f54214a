"""Helpers shared by the tests: a simulated crash after a given step, and tasks whose verifier misbehaves
inside a Ray worker (the workers import this module: the Ray fixtures put tests/ on PYTHONPATH)."""

from __future__ import annotations

import os
import time
from typing import Any, Callable

from selfimprove.tasks.countdown import CountdownTask


class Crash(RuntimeError):
    """Raised by `crash_at` to stop a run as a crash would (after its metrics were logged)."""


def without_clocks(row: dict[str, Any]) -> dict[str, Any]:
    """A metrics row without what a clock measured (`time`, `seconds`, `time/<phase>`): what a rerun must repeat."""
    return {k: v for k, v in row.items() if k not in ("time", "seconds") and not k.startswith("time/")}


def crash_at(step: int) -> Callable[[int, dict[str, Any]], None]:
    """An `on_step` callback that crashes the run when step `step` is done."""

    def on_step(done: int, metrics: dict[str, Any]) -> None:
        if done == step:
            raise Crash(f"simulated crash at step {done}")

    return on_step


def sampling_job(method: Any, policy: Any, task: Any, run_dir: Any) -> Any:
    """A `Job` for calling a method's collection phase directly (no learner: collecting needs none)."""
    from selfimprove.train.job import Job

    return Job(policy, None, task, method.make_stream(), method.State(), run_dir)  # type: ignore[arg-type]


def in_ray_worker() -> bool:
    return "RAY_RAYLET_PID" in os.environ and os.environ.get("SELFIMPROVE_TEST_DRIVER") != str(os.getpid())


class WorkerKillingTask(CountdownTask):
    """Countdown whose verifier ends the process it runs in when that is a Ray worker: a worker that dies
    on every call, so the pool cannot recover."""

    name = "helpers:WorkerKillingTask"

    def judge(self, problem: Any, text: str) -> Any:
        if in_ray_worker():
            os._exit(1)
        return super().judge(problem, text)


class SlowTask(CountdownTask):
    """Countdown whose verifier hangs for a minute inside a Ray worker."""

    name = "helpers:SlowTask"

    def judge(self, problem: Any, text: str) -> Any:
        if in_ray_worker():
            time.sleep(60)
        return super().judge(problem, text)


def write_gpt2(folder: Any, n_positions: int = 128) -> Any:
    """A GPT-2 model folder with a byte-level BPE tokenizer (vocab.json + merges.txt, no pad token)."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    bpe = ByteLevelBPETokenizer()
    text = [f"{a} {b} {c} -> {a + b}: {a}+{b}={a + b}" for a in range(20) for b in range(20) for c in range(3)]
    bpe.train_from_iterator(text, vocab_size=300, min_frequency=1, special_tokens=["<|endoftext|>"])
    bpe.save_model(str(folder))  # vocab.json + merges.txt: the GPT-2 layout
    tokenizer = GPT2TokenizerFast.from_pretrained(folder, eos_token="<|endoftext|>", bos_token="<|endoftext|>",
                                                  unk_token="<|endoftext|>")
    tokenizer.save_pretrained(folder)
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=n_positions, n_embd=32, n_layer=1, n_head=2,
                        bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id)
    GPT2LMHeadModel(config).save_pretrained(folder)
    return folder


def broken_reward(prompts: Any, completions: Any, **kwargs: Any) -> Any:
    """A reward function whose service is down: every call fails."""
    raise ConnectionError("the grading service is down")


def write_json(path: Any, data: object) -> None:
    """`data` as JSON at `path`, its folders made: made-up results for the bench and reproduce tests."""
    import json
    from pathlib import Path

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
