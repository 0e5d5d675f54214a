"""How good is a critic: precision, recall, accuracy, calibration (ECE) and Brier score.

A critic's score is a probability that the state leads to (or is) a right answer, so it is judged both
as a classifier (does thresholding it pick the right states: precision, recall, accuracy) and as a
probability (are its numbers honest: ECE, Brier). Labels may be soft (a value label is a Monte-Carlo
fraction of right rollouts): the classification metrics count a label as positive when it is
`>= threshold`, ECE and Brier use the soft label as it is.

Conventions (documented because libraries differ):
- precision with no predicted positives, and recall with no positive labels, are 0.0 (scikit-learn's
  `zero_division=0`), never NaN, so reports stay valid JSON;
- ECE uses `bins` equal-width bins over [0, 1]; bin b holds scores in [b/B, (b+1)/B), the last bin also
  holds 1.0; ECE = sum over non-empty bins of (n_b / N) * |mean score_b - mean label_b|;
- Brier = mean (score - label)^2, which is the MSE a value function is trained on;
- AUROC = the chance that a random positive scores above a random negative (ties count one half): what
  a search needs from a critic is ranking, and with rare positives a critic that predicts the base rate
  everywhere has a fine ECE and accuracy but AUROC 0.5. It is 0.5 when one class is missing.
- within-problem AUROC = the same over pairs of one problem's examples only: a critic that knows which
  *problems* are easy earns pooled AUROC but none of this, and only this helps rank one problem's answers.
"""

from __future__ import annotations

import math
from typing import Hashable, Sequence


def _check(scores: Sequence[float], labels: Sequence[float]) -> None:
    if len(scores) != len(labels):
        raise ValueError(f"{len(scores)} scores but {len(labels)} labels")
    for name, values in (("score", scores), ("label", labels)):
        for v in values:
            if not (0.0 <= v <= 1.0) or math.isnan(v):
                raise ValueError(f"every {name} must be in [0, 1], got {v}")


def confusion(scores: Sequence[float], labels: Sequence[float], threshold: float = 0.5) -> tuple[int, int, int, int]:
    """(true positives, false positives, true negatives, false negatives) at `threshold`."""
    _check(scores, labels)
    tp = fp = tn = fn = 0
    for s, y in zip(scores, labels):
        predicted, actual = s >= threshold, y >= threshold
        if predicted and actual:
            tp += 1
        elif predicted:
            fp += 1
        elif actual:
            fn += 1
        else:
            tn += 1
    return tp, fp, tn, fn


def precision(scores: Sequence[float], labels: Sequence[float], threshold: float = 0.5) -> float:
    tp, fp, _, _ = confusion(scores, labels, threshold)
    return tp / (tp + fp) if tp + fp else 0.0


def recall(scores: Sequence[float], labels: Sequence[float], threshold: float = 0.5) -> float:
    tp, _, _, fn = confusion(scores, labels, threshold)
    return tp / (tp + fn) if tp + fn else 0.0


def accuracy(scores: Sequence[float], labels: Sequence[float], threshold: float = 0.5) -> float:
    tp, fp, tn, fn = confusion(scores, labels, threshold)
    total = tp + fp + tn + fn
    return (tp + tn) / total if total else 0.0


def expected_calibration_error(scores: Sequence[float], labels: Sequence[float], bins: int = 10) -> float:
    """Equal-width-bin ECE (see the module docstring); 0.0 for no scores."""
    _check(scores, labels)
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    if not scores:
        return 0.0
    sums: list[list[float]] = [[0.0, 0.0, 0.0] for _ in range(bins)]  # count, score sum, label sum
    for s, y in zip(scores, labels):
        b = min(int(s * bins), bins - 1)
        sums[b][0] += 1
        sums[b][1] += s
        sums[b][2] += y
    n = len(scores)
    return sum(c / n * abs(ss / c - ys / c) for c, ss, ys in sums if c)


def brier(scores: Sequence[float], labels: Sequence[float]) -> float:
    """Mean squared error between scores and (possibly soft) labels; 0.0 for no scores."""
    _check(scores, labels)
    return sum((s - y) ** 2 for s, y in zip(scores, labels)) / len(scores) if scores else 0.0


def auroc(scores: Sequence[float], labels: Sequence[float], threshold: float = 0.5) -> float:
    """Area under the ROC curve by ranks (Mann-Whitney U), labels positive when `>= threshold`."""
    _check(scores, labels)
    positives = sum(1 for y in labels if y >= threshold)
    negatives = len(labels) - positives
    if not positives or not negatives:
        return 0.5
    order = sorted(range(len(scores)), key=lambda i: scores[i])
    rank_sum, i = 0.0, 0
    while i < len(order):  # average ranks (1-based) over runs of tied scores
        j = i
        while j + 1 < len(order) and scores[order[j + 1]] == scores[order[i]]:
            j += 1
        mean_rank = (i + j) / 2 + 1
        rank_sum += mean_rank * sum(1 for k in order[i : j + 1] if labels[k] >= threshold)
        i = j + 1
    return (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)


def within_problem_auroc(
    scores: Sequence[float], labels: Sequence[float], groups: Sequence[Hashable], threshold: float = 0.5
) -> float:
    """The share of (right, wrong) pairs *of the same problem* that the critic orders right (ties count
    one half): what best-of-N and a search need, unlike the pooled AUROC, which a critic can earn by
    telling easy problems from hard ones. 0.5 when no problem has both a right and a wrong example."""
    _check(scores, labels)
    if len(groups) != len(scores):
        raise ValueError(f"{len(scores)} scores but {len(groups)} groups")
    by_group: dict[Hashable, tuple[list[float], list[float]]] = {}
    for s, y, g in zip(scores, labels, groups):
        right, wrong = by_group.setdefault(g, ([], []))
        (right if y >= threshold else wrong).append(s)
    ordered = pairs = 0.0
    for right, wrong in by_group.values():
        for r in right:
            for w in wrong:
                ordered += 1.0 if r > w else 0.5 if r == w else 0.0
        pairs += len(right) * len(wrong)
    return ordered / pairs if pairs else 0.5


def critic_report(scores: Sequence[float], labels: Sequence[float], *, threshold: float = 0.5, bins: int = 10,
                  groups: Sequence[Hashable] | None = None) -> dict[str, float]:
    """Every metric above, plus the positive rate of the labels (the base rate a critic must beat) and
    the mean score, as one flat dict for summaries; with `groups` (each example's problem) also the
    within-problem AUROC."""
    tp, fp, tn, fn = confusion(scores, labels, threshold)
    n = tp + fp + tn + fn
    return {
        "examples": float(n),
        "positive_rate": (tp + fn) / n if n else 0.0,
        "mean_score": sum(scores) / n if n else 0.0,
        "precision": tp / (tp + fp) if tp + fp else 0.0,
        "recall": tp / (tp + fn) if tp + fn else 0.0,
        "accuracy": (tp + tn) / n if n else 0.0,
        "auroc": auroc(scores, labels, threshold),
        "ece": expected_calibration_error(scores, labels, bins),
        "brier": brier(scores, labels),
        **({"within_auroc": within_problem_auroc(scores, labels, groups, threshold)} if groups is not None else {}),
    }
