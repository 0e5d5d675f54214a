"""Train one learned critic on labelled examples and judge it on held-out problems.

Loss by kind (`LearnedCritic.loss`): the value function regresses sigmoid(head) onto Monte-Carlo
fractions with MSE (SPECS §5: "MSE on Monte-Carlo outcome labels"); PRM and ORM are classifiers,
trained with binary cross-entropy on the head's logit (soft PRM labels work with the same BCE).

The loop: `epochs` passes over a seeded shuffle, `batch_size` examples per optimizer step accumulated
over micro-batches (each micro-batch's loss is scaled by its share of the batch, so the step does not
depend on the micro-batch size); the update itself (AdamW over trunk and head, gradient clipping, the
recipe's learning-rate schedule) is the one `Learner`'s, as for every model selfimprove trains. The held-out set is scored before training and after every epoch; the final
report holds precision, recall, accuracy, ECE and Brier (`critics/metrics.py`).

Held-out split: by problem, not by example (prefixes of one answer are near-duplicates), by a hash of
the problem's prompt and the seed, so the same recipe always holds out the same problems.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F

from selfimprove.critics.labels import Example
from selfimprove.critics.metrics import critic_report
from selfimprove.critics.model import LearnedCritic
from selfimprove.critics.recipe import CriticTraining
from selfimprove.train.learner import Learner
from selfimprove.train.runlog import RunLog

StepCallback = Callable[[int, dict[str, Any]], None]


def _held_out_bucket(group: str, seed: int) -> float:
    digest = hashlib.sha256(f"critic-split:{seed}:{group}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_examples(examples: Sequence[Example], fraction: float, seed: int) -> tuple[list[Example], list[Example]]:
    """(train, held_out): a problem's examples all go to one side; about `fraction` of the problems
    are held out, and at least one problem on each side when there are two or more."""
    groups = sorted({e.group for e in examples}, key=lambda g: _held_out_bucket(g, seed))
    if len(groups) < 2:
        raise ValueError(f"a held-out split needs examples of at least 2 problems, got {len(groups)}")
    held = min(len(groups) - 1, max(1, round(fraction * len(groups))))
    held_groups = set(groups[:held])
    return [e for e in examples if e.group not in held_groups], [e for e in examples if e.group in held_groups]


def example_loss(critic: LearnedCritic, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-example loss [B] for the critic's kind: MSE on probabilities or BCE on logits."""
    if critic.loss == "mse":
        return (torch.sigmoid(logits.float()) - labels) ** 2
    return F.binary_cross_entropy_with_logits(logits.float(), labels, reduction="none")


def evaluate_critic(critic: LearnedCritic, examples: Sequence[Example], *, threshold: float = 0.5,
                    bins: int = 10) -> dict[str, float]:
    """Held-out metrics plus the training loss on these examples (`loss`)."""
    scores = critic.score_ids([e.token_ids for e in examples])
    labels = [e.label for e in examples]
    p = torch.tensor(scores, dtype=torch.float64).clamp(1e-7, 1 - 1e-7)
    y = torch.tensor(labels, dtype=torch.float64)
    if critic.loss == "mse":
        loss = ((p - y) ** 2).mean()
    else:
        loss = F.binary_cross_entropy(p, y)
    return {"loss": float(loss), **critic_report(scores, labels, threshold=threshold, bins=bins)}


def train_critic(
    critic: LearnedCritic,
    train: Sequence[Example],
    held_out: Sequence[Example],
    config: CriticTraining,
    *,
    seed: int = 0,
    log: RunLog | None = None,
    on_step: StepCallback | None = None,
) -> dict[str, Any]:
    """Train in place; return {"before": metrics, "after": metrics, "steps", "train_examples", ...}."""
    if not train or not held_out:
        raise ValueError(f"{critic.kind}: need training and held-out examples (got {len(train)} and {len(held_out)})")
    wrong = {e.kind for e in list(train) + list(held_out)} - {critic.kind}
    if wrong:
        raise ValueError(f"a {critic.kind} critic cannot train on {sorted(wrong)} examples")
    o = config.optim
    steps_per_epoch = math.ceil(len(train) / config.batch_size)
    total = steps_per_epoch * config.epochs
    learner = Learner(critic, o, total)
    generator = torch.Generator().manual_seed(seed)
    judge = dict(threshold=config.threshold, bins=config.ece_bins)

    before = evaluate_critic(critic, held_out, **judge)
    if log is not None:
        log.log(0, {f"eval/{k}": v for k, v in before.items()})
    step, losses, after = 0, [], before
    critic.network.train()
    for epoch in range(config.epochs):
        order = torch.randperm(len(train), generator=generator).tolist()
        for start in range(0, len(order), config.batch_size):
            batch = [train[i] for i in order[start : start + config.batch_size]]

            def micro_loss(micro: Sequence[Example], size: int = len(batch)) -> torch.Tensor:
                logits = critic.logits([e.token_ids for e in micro])
                labels = torch.tensor([e.label for e in micro], dtype=torch.float32, device=logits.device)
                return example_loss(critic, logits, labels).sum() / size

            micro_batches = [batch[m : m + o.micro_batch_size] for m in range(0, len(batch), o.micro_batch_size)]
            stats = learner.step_on(micro_batches, micro_loss)
            step += 1
            losses.append(stats["loss"])
            metrics: dict[str, Any] = {"train/loss": stats["loss"], "train/grad_norm": stats["grad_norm"],
                                       "train/lr": stats["lr"], "epoch": epoch}
            if start + config.batch_size >= len(order):  # the epoch's last step: judge the held-out set
                after = evaluate_critic(critic, held_out, **judge)
                metrics.update({f"eval/{k}": v for k, v in after.items()})
            if log is not None:
                log.log(step, metrics)
            if on_step is not None:
                on_step(step, metrics)
    critic.network.eval()
    return {
        "kind": critic.kind,
        "loss_fn": critic.loss,
        "train_examples": len(train),
        "held_out_examples": len(held_out),
        "held_out_problems": len({e.group for e in held_out}),
        "steps": step,
        "first_train_loss": losses[0],
        "last_train_loss": losses[-1],
        "before": before,
        "after": after,
    }


def total_steps(num_train: int, config: CriticTraining) -> int:
    """Optimizer steps `train_critic` takes for `num_train` examples (for progress bars)."""
    return math.ceil(num_train / config.batch_size) * config.epochs
