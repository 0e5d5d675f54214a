"""`selfimprove critic train`: label the policy's own rollouts, train the requested critics, report.

Run directory:
- `config.yaml`: the resolved recipe;
- `labels.jsonl`: every labelled example (`critics/labels.py`), reusable with `labels.path`;
- `value/`, `prm/`, `orm/`: critic folders that `critics.model.load_critic` (and `selfimprove search`)
  load;
- `logs/<kind>/metrics.jsonl`: training loss per step, held-out metrics per epoch;
- `summary.json`: per critic, precision, recall, accuracy, ECE and Brier on held-out problems, before
  and after training, with the label counts.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch

from selfimprove.config import dump_yaml
from selfimprove.critics.labels import Example, balance_labels, build_labels, load_labels, save_labels, smooth_labels
from selfimprove.critics.model import CRITICS
from selfimprove.critics.recipe import CriticRecipe
from selfimprove.critics.train import split_examples, total_steps, train_critic
from selfimprove.tasks.plugins import make_task
from selfimprove.train.models import load_policy
from selfimprove.train.runlog import RunLog
from selfimprove.policy.base import CountingSampler
from selfimprove.progress import StageBar, no_bar





def label_counts(examples: list[Example]) -> dict[str, dict[str, float]]:
    counts: dict[str, dict[str, float]] = {}
    for kind in sorted({e.kind for e in examples}):
        mine = [e for e in examples if e.kind == kind]
        counts[kind] = {"examples": len(mine), "problems": len({e.group for e in mine}),
                        "mean_label": sum(e.label for e in mine) / len(mine)}
    return counts


def run_critic_training(recipe: CriticRecipe, *, bar: StageBar = no_bar) -> dict[str, Any]:
    root = Path(recipe.run_dir)
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.yaml").write_text(dump_yaml(recipe))
    began = time.time()
    task = make_task(recipe.task.name, recipe.task.params)
    policy = load_policy(recipe.model, engine=recipe.engine, seed=recipe.seed)
    lab = recipe.labels
    label_tokens = 0
    if lab.path:
        examples = [e for e in load_labels(lab.path) if e.kind in recipe.critics]
    else:
        problems = task.problems("train", lab.num_problems, start=lab.first_problem)
        generator = torch.Generator(device=policy.device).manual_seed(recipe.seed)
        counting = CountingSampler(policy)
        with bar("critic labels: Monte-Carlo rollouts", len(problems)) as on_step:
            examples = build_labels(counting, task, problems, recipe.step_rule.rule(), lab, kinds=recipe.critics,
                                    generator=generator, on_problems=lambda done: on_step(done, {}))
        label_tokens = counting.tokens
    save_labels(root / "labels.jsonl", examples)
    label_seconds = time.time() - began

    summary: dict[str, Any] = {"model": recipe.model.path, "task": recipe.task.name,
                               "labels_from": lab.path or "policy rollouts", "labels": label_counts(examples),
                               "label_seconds": round(label_seconds, 1), "label_tokens": label_tokens, "critics": {}}
    for index, kind in enumerate(recipe.critics, start=1):
        mine = [e for e in examples if e.kind == kind]
        if not mine:
            raise ValueError(f"no {kind} labels to train on (check labels.path or the label settings)")
        train, held_out = split_examples(mine, recipe.training.eval_fraction, recipe.seed)
        if recipe.training.balance:
            train = balance_labels(train, recipe.seed)
        train = smooth_labels(train, recipe.training.label_smoothing, prm_label=lab.prm_label)
        critic = CRITICS[kind].from_policy(policy, batch_size=recipe.training.score_batch_size,
                                           meta={"policy": recipe.model.path, "task": recipe.task.model_dump(),
                                                 "step_rule": recipe.step_rule.model_dump()})
        log = RunLog(root / "logs" / kind)
        began = time.time()
        try:
            with bar(f"{index}/{len(recipe.critics)} train {kind}", total_steps(train, recipe.training, recipe.seed)) as on_step:
                report = train_critic(critic, train, held_out, recipe.training, seed=recipe.seed, log=log, on_step=on_step)
        finally:
            log.close()
        critic.save(root / kind, tokenizer_of=policy)
        summary["critics"][kind] = {**report, "seconds": round(time.time() - began, 1), "path": str(root / kind)}
        del critic
    (root / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary
