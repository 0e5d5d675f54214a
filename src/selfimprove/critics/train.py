"""Train one learned critic on labelled examples and judge it on held-out problems.

Loss by kind (`LearnedCritic.loss`): the value function regresses sigmoid(head) onto Monte-Carlo
fractions with MSE (SPECS §5: "MSE on Monte-Carlo outcome labels"); PRM and ORM are classifiers,
trained with binary cross-entropy on the head's logit (soft PRM labels work with the same BCE). With
`training.objective` `pairwise` or `mixed`, a Bradley-Terry term over the examples of one problem
(`pairwise_loss`) teaches the critic to order one problem's answers; with `listwise`, a softmax over each
problem's examples puts its mass on the right ones (`listwise_loss`); batches then hold whole problems.

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


def pairwise_loss(logits: torch.Tensor, labels: torch.Tensor, groups: Sequence[str]) -> tuple[torch.Tensor, int]:
    """(sum over pairs, number of pairs) of -log sigmoid(z_i - z_j) over every pair of examples of one
    problem with label_i > label_j (Bradley-Terry: the better one should score higher)."""
    values = labels.tolist()
    better: list[int] = []
    worse: list[int] = []
    for g in dict.fromkeys(groups):
        idx = [k for k, x in enumerate(groups) if x == g]
        for i in idx:
            for j in idx:
                if values[i] > values[j]:
                    better.append(i)
                    worse.append(j)
    if not better:
        return logits.sum() * 0.0, 0  # keeps the graph when there is no pair
    z = logits.float()
    margin = z[torch.tensor(better, device=z.device)] - z[torch.tensor(worse, device=z.device)]
    return -F.logsigmoid(margin).sum(), len(better)


def listwise_loss(logits: torch.Tensor, labels: torch.Tensor, groups: Sequence[str]) -> tuple[torch.Tensor, int]:
    """(sum over problems, number of problems) of -log(softmax mass on the right examples) within each
    problem that has right (label >= 0.5) and wrong examples: logsumexp(z_all) - logsumexp(z_right). This
    is the chance that a pick by softmax over one problem's answers picks a right one, which is what
    best-of-N asks of a critic: the top of each problem, not every pair."""
    z = logits.float()
    total = z.sum() * 0.0
    ranked = _ranked_groups(labels.tolist(), groups)
    for rows, right in ranked:
        total = total + torch.logsumexp(z[rows], 0) - torch.logsumexp(z[right], 0)
    return total, len(ranked)


def _ranked_groups(labels: Sequence[float], groups: Sequence[str]) -> list[tuple[list[int], list[int]]]:
    """(all rows, right rows) of each problem with right (label >= 0.5) and wrong examples: the problems a
    listwise term ranks (read from labels on the host, so no device sync per problem)."""
    rows: dict[str, list[int]] = {}
    for k, g in enumerate(groups):
        rows.setdefault(g, []).append(k)
    out = []
    for idx in rows.values():
        right = [k for k in idx if labels[k] >= 0.5]
        if 0 < len(right) < len(idx):
            out.append((idx, right))
    return out


def _problem_batches(train: Sequence[Example], batch_size: int, generator: torch.Generator) -> list[list[int]]:
    """Whole problems per batch, problems in a seeded random order, about `batch_size` examples each."""
    by_group: dict[str, list[int]] = {}
    for k, e in enumerate(train):
        by_group.setdefault(e.group, []).append(k)
    groups = list(by_group)
    batches: list[list[int]] = [[]]
    for g in (groups[i] for i in torch.randperm(len(groups), generator=generator).tolist()):
        if batches[-1] and len(batches[-1]) + len(by_group[g]) > batch_size:
            batches.append([])
        batches[-1].extend(by_group[g])
    return batches


def plan_batches(train: Sequence[Example], config: CriticTraining, seed: int) -> list[list[list[int]]]:
    """Per epoch, the batches of example indices: a seeded shuffle cut into `batch_size` pieces, or whole
    problems per batch when the objective ranks within problems."""
    generator = torch.Generator().manual_seed(seed)
    epochs = []
    for _ in range(config.epochs):
        if config.objective == "pointwise":
            order = torch.randperm(len(train), generator=generator).tolist()
            epochs.append([order[s : s + config.batch_size] for s in range(0, len(order), config.batch_size)])
        else:
            epochs.append(_problem_batches(train, config.batch_size, generator))
    return epochs


def _micro_batches(batch: list[Example], size: int, by_problem: bool) -> list[list[Example]]:
    """Micro-batches of `size` examples; with a ranking term a problem is never cut in two."""
    if not by_problem:
        return [batch[m : m + size] for m in range(0, len(batch), size)]
    out: list[list[Example]] = [[]]
    for e in batch:
        if out[-1] and len(out[-1]) >= size and out[-1][-1].group != e.group:
            out.append([])
        out[-1].append(e)
    return out


def evaluate_critic(critic: LearnedCritic, examples: Sequence[Example], *, threshold: float = 0.5,
                    bins: int = 10) -> dict[str, float]:
    """Held-out metrics (within-problem AUROC included) plus the training loss on these examples (`loss`)."""
    scores = critic.score_ids([e.token_ids for e in examples])
    labels = [e.label for e in examples]
    p = torch.tensor(scores, dtype=torch.float64).clamp(1e-7, 1 - 1e-7)
    y = torch.tensor(labels, dtype=torch.float64)
    if critic.loss == "mse":
        loss = ((p - y) ** 2).mean()
    else:
        loss = F.binary_cross_entropy(p, y)
    return {"loss": float(loss), **critic_report(scores, labels, threshold=threshold, bins=bins, groups=[e.group for e in examples])}


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
    epochs = plan_batches(train, config, seed)
    learner = Learner(critic, o, sum(len(e) for e in epochs))
    ranking = config.objective != "pointwise"
    judge = dict(threshold=config.threshold, bins=config.ece_bins)

    before = evaluate_critic(critic, held_out, **judge)
    if log is not None:
        log.log(0, {f"eval/{k}": v for k, v in before.items()})
    step, losses, after = 0, [], before
    critic.network.train()
    for epoch, batches in enumerate(epochs):
        for b, indices in enumerate(batches):
            batch = [train[i] for i in indices]
            micro_batches = _micro_batches(batch, o.micro_batch_size, ranking)
            # the ranking term's normaliser: pairs (pairwise, mixed) or problems with both classes (listwise)
            pairs = sum(_list_count(m) if config.objective == "listwise" else _pair_count(m) for m in micro_batches) if ranking else 0

            def micro_loss(micro: Sequence[Example], size: int = len(batch), pairs: int = pairs) -> torch.Tensor:
                logits = critic.logits([e.token_ids for e in micro])
                labels = torch.tensor([e.label for e in micro], dtype=torch.float32, device=logits.device)
                loss = logits.sum() * 0.0
                if config.objective in ("pointwise", "mixed"):
                    loss = loss + example_loss(critic, logits, labels).sum() / size
                if config.objective == "listwise" and pairs:
                    listed, _ = listwise_loss(logits, labels, [e.group for e in micro])
                    loss = loss + listed / pairs
                elif ranking and pairs:
                    ranked, _ = pairwise_loss(logits, labels, [e.group for e in micro])
                    loss = loss + config.ranking_weight * ranked / pairs
                return loss

            stats = learner.step_on(micro_batches, micro_loss)
            step += 1
            losses.append(stats["loss"])
            metrics: dict[str, Any] = {"train/loss": stats["loss"], "train/grad_norm": stats["grad_norm"],
                                       "train/lr": stats["lr"], "epoch": epoch}
            if b == len(batches) - 1:  # the epoch's last step: judge the held-out set
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


def _pair_count(examples: Sequence[Example]) -> int:
    labels = [e.label for e in examples]
    groups = [e.group for e in examples]
    return sum(1 for i in range(len(examples)) for j in range(len(examples)) if groups[i] == groups[j] and labels[i] > labels[j])


def _list_count(examples: Sequence[Example]) -> int:
    return len(_ranked_groups([e.label for e in examples], [e.group for e in examples]))


def total_steps(train: Sequence[Example], config: CriticTraining, seed: int = 0) -> int:
    """Optimizer steps `train_critic` takes on `train` (for progress bars)."""
    return sum(len(e) for e in plan_batches(train, config, seed))
