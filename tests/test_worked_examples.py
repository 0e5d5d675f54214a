"""The four worked examples of docs/DESIGN.md, as written there: a new estimator, task, search and method
each work through the registries with no other change."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from selfimprove.algos.advantages import ADVANTAGES, Estimate, EstimatorInputs, register_estimator
from selfimprove.algos.groups import broadcast_on_mask, group_stats
from selfimprove.cli import main
from selfimprove.config import RLRecipe, SFTRecipe, load_recipe
from selfimprove.methods.base import Method, register_method
from selfimprove.rollout.episode import collate
from selfimprove.rollout.single import demonstration_episode
from selfimprove.search.best_of_n import BestOfNConfig, scored_candidates
from selfimprove.search.registry import SEARCHES, register_search, run_search
from selfimprove.search.result import make_results
from selfimprove.tasks.base import TASKS, GeneratedTask, Problem, TaskConfig, Verdict, register_task
from selfimprove.tasks.plugins import make_task
from selfimprove.train.objectives import sft_objective

RECIPES = Path(__file__).resolve().parent.parent / "recipes"


# ------------------------------------------------------------------------------------ an estimator
@register_estimator("mean_baseline")
def mean_baseline(x: EstimatorInputs) -> Estimate:
    mean, _, _ = group_stats(x.rewards, x.groups)
    adv = broadcast_on_mask(x.rewards.to(mean.dtype) - mean, x.rewards, x.mask)
    return Estimate(adv, broadcast_on_mask(x.rewards, x.rewards, x.mask))


def test_a_new_estimator_is_one_decorated_function() -> None:
    # group 0 rewards [1, 0]: mean 0.5 -> [0.5, -0.5]; group 1 [3]: 0
    est = ADVANTAGES.get("mean_baseline")(EstimatorInputs(torch.tensor([1.0, 0.0, 3.0]), torch.tensor([0, 0, 1]), torch.ones(3, 2)))
    assert est.advantages.tolist() == [[0.5, 0.5], [-0.5, -0.5], [0.0, 0.0]]
    recipe = load_recipe(RLRecipe, RECIPES / "countdown-grpo.yaml", ["loss.estimator=mean_baseline"])
    assert recipe.loss.estimator == "mean_baseline" and not recipe.loss.token_level


# ------------------------------------------------------------------------------------ a task
class ParityConfig(TaskConfig):
    length: int = 8


@register_task("parity")
class ParityTask(GeneratedTask):
    """Parity: is the number of ones in a bit string even or odd?"""

    Config = ParityConfig

    def draw(self, rng, split, index):  # type: ignore[no-untyped-def]
        bits = "".join(rng.choice("01") for _ in range(self.config.length))
        answer = "even" if bits.count("1") % 2 == 0 else "odd"
        return Problem(f"parity-{split}-{index}", f"{bits} ->", answer, (answer,)) if self.in_split(bits, split) else None

    def judge(self, problem, text):  # type: ignore[no-untyped-def]
        return Verdict.right() if text.strip() == problem.answer else Verdict.wrong("wrong parity")


def test_a_new_task_is_one_registered_class() -> None:
    assert ParityTask.name == "parity" and TASKS.get("parity") is ParityTask
    task = make_task("parity", {"length": 6})
    train = {p.prompt for p in task.problems("train", 50)}
    test = {p.prompt for p in task.problems("test", 20)}
    assert not train & test  # disjoint by a hash of the bits
    p = task.problem("train", 0)
    assert task.verify(p, p.answer).correct and not task.verify(p, "maybe").correct
    assert task.verify(p, None).reason == "not text"  # type: ignore[arg-type]  (the base class's guard)
    with pytest.raises(ValueError, match="unknown split"):
        task.problem("dev", 0)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------ a search
@register_search("last_of_n", BestOfNConfig)
def last_of_n(policy, task, problems, config, critic=None, budgets=None):  # type: ignore[no-untyped-def]
    budgets, candidates, _ = scored_candidates(policy, problems, config, None, budgets)
    chosen = [group[-1] if group else None for group in candidates]
    return make_results("last_of_n", task, problems, chosen, budgets, [len(g) for g in candidates])


def test_a_new_search_is_one_registered_function(small_policy) -> None:  # type: ignore[no-untyped-def]
    assert "last_of_n" in SEARCHES
    task = make_task("countdown", {"num_numbers": 2, "max_number": 9, "min_target": 1, "max_target": 20})
    results = run_search("last_of_n", small_policy, task, task.problems("test", 3), {"n": 3, "max_answer_tokens": 6})
    assert [r.candidates for r in results] == [3, 3, 3]
    assert all(r.search == "last_of_n" and 0 < r.budget.tokens <= 18 for r in results)


# ------------------------------------------------------------------------------------ a method
@register_method
class ReverseSFT(Method[SFTRecipe]):
    name, command, help, Recipe = "reverse_sft", "reverse-sft", "SFT on demonstrations, hardest first", SFTRecipe

    def step(self, job, step):  # type: ignore[no-untyped-def]
        drawn = job.stream.take(job.task, self.recipe.batch_size)
        episodes = [demonstration_episode(job.policy, job.task, p) for p in reversed(drawn.problems)]
        return {"train/loss": job.learner.step(collate(episodes, job.policy.pad_id), sft_objective)["loss"]}


def test_a_new_method_is_one_registered_class(tmp_path: Path) -> None:
    args = ["--set", f"run_dir={tmp_path / 'run'}", "--set", "model.path=tiny:small", "--set", "steps=2",
            "--set", "batch_size=4", "--set", "eval.num_problems=2", "--set", "eval.max_new_tokens=4",
            "--set", "task.params.num_numbers=2"]
    assert main(["reverse-sft", str(RECIPES / "countdown-sft.yaml"), "--set", "method=reverse_sft", *args]) == 0
    assert (tmp_path / "run" / "summary.json").exists()
