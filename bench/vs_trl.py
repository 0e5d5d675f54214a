"""GRPO speed and result: TRL's `GRPOTrainer` against our RL loop (`selfimprove.methods.rl.run_rl`).

Same starting model (the built-in tiny model after a short SFT with our `run_sft`, or `--model DIR`),
same tokenizer, same Countdown prompts in the same order, same batch (16 prompts x 8 samples = 128
completions and one optimizer step per step), at most 16 new tokens, temperature 1.0, no KL
(TRL `beta=0.0`), GRPO advantages (group mean and std), per-sequence loss mean, clip 0.2, AdamW at a
constant lr 5e-5, gradient clipping at 1.0, fp32 on CPU, no gradient checkpointing.

The two alternate in one process, in chunks of `--chunk` steps: ours, TRL, ours, TRL, ... (TRL drives,
and a callback runs our next chunk, which resumes exactly from its own checkpoint). Seconds per step
cover everything a step does (sampling, scoring, the update); ours from `run_rl`'s step clock by
differences (the clock continues across resumes: `step_phases.chunk_seconds`), TRL's from
`on_step_begin` to `on_step_end`. Each side's step is broken down into generation, scoring, ref/old
log-probs, forward/backward, optimizer and bookkeeping (`bench/step_phases.py`). Then both are
evaluated by our `evaluate` (greedy) on the same held-out test problems. Everything is written to a
temporary folder that is removed at the end.

The last line is `ours_s_per_step=<x> trl_s_per_step=<y> ratio=<x/y>`.

    .venv/bin/python bench/vs_trl.py                           # ~4-5 min on 2 cores (SFT included)
    .venv/bin/python bench/vs_trl.py --model runs/countdown-sft/final --steps 100 --chunk 10
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("ACCELERATE_USE_CPU", "true")

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_result  # noqa: E402
from step_phases import TRLClocks, breakdown_table, chunk_seconds, ours_breakdown  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=None, help="start from this HF folder instead of running SFT")
    ap.add_argument("--sft-steps", type=int, default=300, help="SFT steps (batch 64) for the starting model (default 300)")
    ap.add_argument("--save-sft", type=Path, default=None, help="also copy the SFT model here (reuse it with --model)")
    ap.add_argument("--steps", type=int, default=20, help="GRPO steps for each trainer (default 20)")
    ap.add_argument("--chunk", type=int, default=5, help="steps per alternation chunk (default 5)")
    ap.add_argument("--prompts", type=int, default=16, help="prompts per step (default 16)")
    ap.add_argument("--samples", type=int, default=8, help="completions per prompt (default 8)")
    ap.add_argument("--max-new-tokens", type=int, default=16)
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--eval-problems", type=int, default=200, help="held-out test problems (default 200)")
    ap.add_argument("--eval-max-new-tokens", type=int, default=24)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--first-problem", type=int, default=1_000_000, help="first train problem for RL (past any SFT data)")
    return ap.parse_args(argv)


def quiet() -> None:
    import logging

    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    for name in ("trl", "accelerate", "datasets"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    try:
        import datasets

        datasets.disable_progress_bars()
    except Exception:  # pragma: no cover
        pass


class GlobalRNG:
    """Save and restore the process-wide RNGs around our chunks (`run_rl` seeds them on entry), so
    TRL's sampling stream (which uses torch's global generator) is not reset every chunk."""

    def __enter__(self) -> "GlobalRNG":
        self.state = (torch.get_rng_state(), random.getstate(), np.random.get_state())
        return self

    def __exit__(self, *exc: Any) -> None:
        torch.set_rng_state(self.state[0])
        random.setstate(self.state[1])
        np.random.set_state(self.state[2])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    quiet()
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, PrinterCallback, ProgressCallback, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from selfimprove.config import (
        EvalConfig,
        LossConfig,
        ModelConfig,
        OptimConfig,
        RLRecipe,
        SamplingConfig,
        Schedule,
        SFTRecipe,
        TaskSpec,
    )
    from selfimprove.eval.evaluate import evaluate
    from selfimprove.policy.hf import HFPolicy
    from selfimprove.tasks.plugins import make_task
    from selfimprove.methods.rl import run_rl
    from selfimprove.methods.sft import run_sft

    began = time.perf_counter()
    task_spec = TaskSpec(name="countdown", params={})
    task = make_task(task_spec.name, task_spec.params)
    test_problems = task.distinct_problems("test", args.eval_problems)

    def accuracy(policy: HFPolicy) -> float:
        return evaluate(policy, task, test_problems, batch_size=200, max_new_tokens=args.eval_max_new_tokens).accuracy

    with tempfile.TemporaryDirectory(prefix="selfimprove-vs-trl-") as tmp_name:
        tmp = Path(tmp_name)
        # ------------------------------------------------------------------ the starting model
        if args.model is None:
            t0 = time.perf_counter()
            sft = run_sft(
                SFTRecipe(
                    run_dir=str(tmp / "sft"),
                    seed=args.seed,
                    model=ModelConfig(path="tiny"),
                    task=task_spec,
                    steps=args.sft_steps,
                    schedule=Schedule(checkpoint_every=args.sft_steps, keep_checkpoints=1),
                    eval=EvalConfig(num_problems=1, max_new_tokens=args.eval_max_new_tokens),
                )
            )
            start_dir = Path(sft["model"])
            print(f"SFT: {args.sft_steps} steps of the built-in tiny model in {time.perf_counter() - t0:.0f}s")
            if args.save_sft is not None:
                HFPolicy.load(start_dir).save(args.save_sft)
        else:
            start_dir = args.model
        start_acc = accuracy(HFPolicy.load(start_dir, seed=args.seed))
        print(f"start model: {start_dir if args.model else 'SFT model'}, held-out greedy accuracy {start_acc:.1%} "
              f"({len(test_problems)} test problems)")

        # ------------------------------------------------------------------ our GRPO, in resumable chunks
        recipe_base = dict(
            run_dir=str(tmp / "ours"),
            seed=args.seed,
            model=ModelConfig(path=str(start_dir)),
            task=task_spec,
            prompts_per_step=args.prompts,
            first_problem=args.first_problem,
            sampling=SamplingConfig(n=args.samples, temperature=1.0, top_p=1.0, max_new_tokens=args.max_new_tokens),
            loss=LossConfig(estimator="grpo", eps_low=0.2, eps_high=0.2, aggregation="seq_mean", kl_coef=0.0),
            optim=OptimConfig(lr=args.lr, warmup_steps=0, schedule="constant", max_grad_norm=1.0,
                              micro_batch_size=args.prompts * args.samples),
            schedule=Schedule(eval_every=0, checkpoint_every=args.steps, keep_checkpoints=1),
            # each chunk ends with run_rl's own evaluation: keep it to one problem (both models are
            # evaluated the same way at the end)
            eval=EvalConfig(num_problems=1, max_new_tokens=args.eval_max_new_tokens),
        )
        ours_clocks: list[list[float]] = []  # the step clock's `seconds` at each step, per chunk
        ours_rows: list[dict[str, Any]] = []  # every step's metrics (time/<phase> for the breakdown)
        ours_rewards: list[float] = []
        ours_done = 0

        def run_ours(until: int) -> None:
            nonlocal ours_done
            if until <= ours_done:
                return
            clock: list[float] = []

            def on_step(step: int, metrics: dict[str, Any]) -> None:
                if "train/reward" not in metrics:  # a note, not a step
                    return
                ours_rewards.append(float(metrics["train/reward"]))
                clock.append(float(metrics["seconds"]))
                ours_rows.append(dict(metrics))

            with GlobalRNG():
                run_rl(RLRecipe(steps=until, **recipe_base), on_step=on_step)
            ours_clocks.append(clock)
            ours_done = until

        def ours_chunk() -> tuple[int, float]:
            """(steps, seconds) of our last chunk."""
            return len(ours_clocks[-1]), chunk_seconds(ours_clocks)[-1]

        # ------------------------------------------------------------------ TRL's GRPO
        tokenizer = AutoTokenizer.from_pretrained(start_dir)
        tokenizer.padding_side = "left"
        assert tokenizer.eos_token_id is not None and tokenizer.pad_token_id is not None
        trl_model = AutoModelForCausalLM.from_pretrained(start_dir, dtype=torch.float32)
        problems = task.problems("train", args.steps * args.prompts, start=args.first_problem)
        dataset = Dataset.from_dict({"prompt": [p.prompt for p in problems], "problem": list(range(len(problems)))})

        trl_rewards: list[float] = []  # mean reward of each TRL step's batch

        def countdown_reward(prompts: list[str], completions: list[str], problem: list[int], **_: Any) -> list[float]:
            scores = [task.verify(problems[i], text).score for i, text in zip(problem, completions)]
            trl_rewards.append(statistics.mean(scores))
            return scores

        batch = args.prompts * args.samples
        config = GRPOConfig(
            output_dir=str(tmp / "trl"),
            per_device_train_batch_size=batch,  # one forward/backward over the 128 completions, as ours
            gradient_accumulation_steps=1,  # generation batch = 128 = one optimizer step
            num_generations=args.samples,
            max_completion_length=args.max_new_tokens,
            temperature=1.0,
            top_p=1.0,
            top_k=0,
            beta=0.0,
            loss_type="grpo",
            scale_rewards="group",
            epsilon=0.2,
            num_iterations=1,
            learning_rate=args.lr,
            lr_scheduler_type="constant",
            warmup_steps=0,
            weight_decay=0.0,
            max_grad_norm=1.0,
            optim="adamw_torch",
            max_steps=args.steps,
            shuffle_dataset=False,  # same prompts in the same order as ours
            use_cpu=True,
            bf16=False,
            fp16=False,
            gradient_checkpointing=False,
            report_to=[],
            logging_steps=args.chunk,
            save_strategy="no",
            disable_tqdm=True,
            seed=args.seed,
            dataloader_num_workers=0,
            log_completions=False,
        )
        trainer = GRPOTrainer(
            model=trl_model,
            reward_funcs=countdown_reward,
            args=config,
            train_dataset=dataset,
            processing_class=tokenizer,
        )
        for cb in (PrinterCallback, ProgressCallback):
            trainer.remove_callback(cb)
        clocks = TRLClocks()
        clocks.wrap(trainer, trl_model)

        trl_seconds: list[float] = []

        class Alternate(TrainerCallback):
            """Times TRL's steps; at each chunk boundary runs our next chunk."""

            def on_train_begin(self, *a: Any, **k: Any) -> None:
                run_ours(min(args.chunk, args.steps))

            def on_step_begin(self, *a: Any, **k: Any) -> None:
                clocks.begin()

            def on_optimizer_step(self, *a: Any, **k: Any) -> None:
                clocks.optimized()

            def on_step_end(self, a: Any, state: Any, control: Any, **k: Any) -> None:
                trl_seconds.append(clocks.end())
                done = state.global_step
                if done % args.chunk == 0 or done == args.steps:
                    k_trl = done - (done - 1) // args.chunk * args.chunk
                    k_ours, secs = ours_chunk()
                    print(f"steps {done - k_trl + 1:>3}-{done:<3} ours {secs / k_ours:.2f} s/step, "
                          f"TRL {statistics.mean(trl_seconds[-k_trl:]):.2f} s/step "
                          f"(mean reward: ours {statistics.mean(ours_rewards[-k_ours:]):.3f}, "
                          f"TRL {statistics.mean(trl_rewards[-k_trl:]):.3f})", flush=True)
                    run_ours(min(done + args.chunk, args.steps))

        trainer.add_callback(Alternate())
        trainer.train()
        run_ours(args.steps)  # (no-op unless TRL stopped early)

        ours_s = sum(chunk_seconds(ours_clocks)) / sum(len(c) for c in ours_clocks)
        trl_s = sum(trl_seconds) / len(trl_seconds)
        print(f"seconds per step over {args.steps} steps ({batch} completions each): ours {ours_s:.3f}, TRL {trl_s:.3f}")
        print("where a step's time goes (mean seconds per step; ours from its time/<phase> metrics, which leave out "
              "the checkpoint written at each chunk's end for the alternation):")
        print(breakdown_table(ours_breakdown(ours_rows), clocks.breakdown()))

        # ------------------------------------------------------------------ held-out accuracy
        ours_acc = accuracy(HFPolicy.load(tmp / "ours" / "final", seed=args.seed))
        trl_model.eval()
        trl_acc = accuracy(HFPolicy(trl_model, tokenizer, seed=args.seed))
        print(f"held-out greedy accuracy after {args.steps} steps: ours {ours_acc:.1%}, TRL {trl_acc:.1%} "
              f"(start {start_acc:.1%}; {len(test_problems)} test problems)")
        wall = time.perf_counter() - began
        print(f"benchmark wall time {wall:.0f}s")
    table = breakdown_table(ours_breakdown(ours_rows), clocks.breakdown())
    write_result("vs_trl", "GRPO step time against TRL's GRPOTrainer (bench/vs_trl.py)", {
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "completions_per_step": batch, "ours_s_per_step": ours_s, "trl_s_per_step": trl_s, "ratio": ours_s / trl_s,
        "ours_chunk_s_per_step": [s / len(c) for s, c in zip(chunk_seconds(ours_clocks), ours_clocks)],
        "trl_step_seconds": trl_seconds,
        "phases_s_per_step": {"ours": ours_breakdown(ours_rows), "trl": clocks.breakdown()},
        "accuracy": {"start": start_acc, "ours": ours_acc, "trl": trl_acc, "test_problems": len(test_problems)},
        "wall_seconds": wall,
    }, [f"Seconds per GRPO step over {args.steps} steps of {batch} completions, alternating in chunks of {args.chunk}: "
        f"ours **{ours_s:.3f}**, TRL **{trl_s:.3f}**, ratio **{ours_s / trl_s:.3f}**.", "",
        "Where a step's time goes (mean seconds per step):", "", "```", table, "```", "",
        f"Held-out greedy accuracy after the steps: ours {ours_acc:.1%}, TRL {trl_acc:.1%} (start {start_acc:.1%}, "
        f"{len(test_problems)} test problems). Wall time {wall:.0f} s."], argv)
    print(f"ours_s_per_step={ours_s:.3f} trl_s_per_step={trl_s:.3f} ratio={ours_s / trl_s:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
