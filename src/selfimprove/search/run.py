"""`selfimprove search`: evaluate a search (or a sweep of one) on a task's held-out problems.

The run loads the critics first (a wrong folder fails before the policy is built), then the policy,
takes the first `num_problems` distinct problems of the split and runs the search on them in lockstep
batches of `problems_per_batch`, every point of a sweep in turn. Each problem gets a fresh `Budget`
with the recipe's per-problem `max_tokens`, so tokens and calls are reported per problem (SPECS §6:
compare searches at equal budget).

Run directory:
- `config.yaml`: the resolved recipe;
- `results.jsonl`: one record per (point, problem): `SearchResult.as_record()` (problem_id, answer,
  correct, tokens, policy_calls, critic_calls, stats, ...) plus the point, its setting, the prompt,
  the gold answer and the problem's share of its batch's wall time;
- `summary.json`: per point, accuracy, tokens per problem (mean and total), policy and critic calls,
  seconds; the search, its settings and the critics.

A run resumes at batch granularity: records already in `results.jsonl` are kept and their problems
skipped, as long as the recipe is the same apart from `num_problems`, `problems_per_batch` and the
sweep's values (so a run can be extended with more problems or more sweep points). A combined critic
counts as one critic call per problem per scoring round, whatever the number of its members.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

import yaml

from selfimprove.config import ConfigError, dump_yaml
from selfimprove.critics.base import Critic
from selfimprove.critics.combined import CombinedCritic
from selfimprove.critics.model import LearnedCritic, load_critic
from selfimprove.critics.tool import ToolCritic
from selfimprove.critics.verifier import VerifierCritic
from selfimprove.policy.base import Sampler
from selfimprove.search.recipe import TOOL, VERIFIER, SearchRecipe, takes
from selfimprove.search.registry import SEARCHES
from selfimprove.search.result import SearchResult
from selfimprove.tasks.base import Problem, Task
from selfimprove.tasks.plugins import make_task
from selfimprove.train.models import load_policy
from selfimprove.train.run_dir import changed_keys
from selfimprove.progress import StageBar, no_bar

logger = logging.getLogger(__name__)

RESULTS = "results.jsonl"
SUMMARY = "summary.json"
CONFIG = "config.yaml"
# Recipe fields a resumed run may change: they decide which problems and points run, not their results.
RESUMABLE_CHANGES = ("run_dir", "num_problems", "problems_per_batch", "search.sweep.values")


# ------------------------------------------------------------------------------------------ critics
def build_critics(recipe: SearchRecipe, task: Task) -> tuple[Critic | None, Critic | None]:
    """The combined critic (None without members; a lone member is used as it is) and the outcome critic."""
    section = recipe.critics
    members: list[Critic] = []
    weights: list[float] = []
    for kind, path in section.members().items():
        if kind == VERIFIER:
            members.append(VerifierCritic(task, unfinished="zero"))
        elif kind == TOOL:
            members.append(ToolCritic(task))
        else:
            members.append(_load(path, recipe))
        weights.append(getattr(section.weights, kind))
    critic: Critic | None = None
    if len(members) == 1:
        critic = members[0]
    elif members:
        critic = CombinedCritic(members, weights, name="+".join(section.members()))
    outcome: Critic | None = None
    if section.outcome == VERIFIER:
        outcome = VerifierCritic(task, unfinished="zero")
    elif section.outcome == TOOL:
        outcome = ToolCritic(task)
    elif section.outcome is not None:
        outcome = _load(section.outcome, recipe)
        if section.outcome_tool:
            outcome = CombinedCritic([outcome, ToolCritic(task)], [section.weights.orm, section.weights.tool], name="orm+tool")
    return critic, outcome


def _load(path: str | None, recipe: SearchRecipe) -> LearnedCritic:
    assert path is not None
    critic = load_critic(path, device=recipe.model.device, dtype=recipe.model.dtype, batch_size=recipe.critics.batch_size)
    trained_on = critic.meta.get("task")
    if trained_on is not None and trained_on != recipe.task.model_dump():
        logger.warning("critic %s was trained on task %s, the search runs %s", path, trained_on, recipe.task.model_dump())
    return critic


def check_critics_read_the_policy(policy: Sampler, critics: Sequence[Critic | None]) -> None:
    """A learned critic reads the policy's token ids: its vocabulary and end token must be the policy's."""
    vocab = policy.vocab_size
    for critic in critics:
        members = critic.critics if isinstance(critic, CombinedCritic) else [critic]
        for member in members:
            if not isinstance(member, LearnedCritic):
                continue
            theirs = member.vocab_size
            if theirs != vocab or member.eos_ids[:1] != policy.eos_ids[:1]:
                raise ConfigError(
                    f"critics: the {member.kind} critic reads another tokenizer (vocabulary {theirs}, end "
                    f"{member.eos_ids[:1]}) than the policy (vocabulary {vocab}, end {policy.eos_ids[:1]})"
                )


# ------------------------------------------------------------------------------------------ resume
def recipe_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Dotted fields that differ between two resolved recipes (the training runs' `changed_keys`: paths
    compare by the folder they name), apart from `RESUMABLE_CHANGES`."""
    return [key for key, _, _ in changed_keys(old, new) if key not in RESUMABLE_CHANGES]


def _with_defaults(old: dict[str, Any]) -> dict[str, Any]:
    """An earlier run's recipe with the fields added since at their defaults (as it ran), so a newer
    library resumes it; a recipe the current one cannot read stays as written (and shows as changed)."""
    try:
        return SearchRecipe.model_validate(old).model_dump(mode="json")
    except ValueError:
        return old


def setting_key(setting: dict[str, Any]) -> str:
    return json.dumps(setting, sort_keys=True)


def read_results(path: Path) -> list[dict[str, Any]]:
    """Records of an earlier run; a last line cut short by a crash is dropped (and the file mended)."""
    if not path.is_file():
        return []
    records, lines = [], path.read_text().splitlines()
    for number, line in enumerate(lines, start=1):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if number < len(lines):
                raise ValueError(f"{path}: line {number} is not JSON") from None
            logger.warning("%s: dropping a cut-off last line", path)
            path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return records


def prepare_run_dir(recipe: SearchRecipe) -> list[dict[str, Any]]:
    """Create the run directory, refuse to mix results of another recipe, write config.yaml, and
    return the records already there."""
    root = Path(recipe.run_dir)
    root.mkdir(parents=True, exist_ok=True)
    records = read_results(root / RESULTS)
    resolved = recipe.model_dump(mode="json")
    if records:
        if not (root / CONFIG).is_file():
            raise ConfigError(f"run_dir: {root} holds {RESULTS} but no {CONFIG}; use a new run_dir")
        changed = recipe_changes(_with_defaults(yaml.safe_load((root / CONFIG).read_text()) or {}), resolved)
        if changed:
            raise ConfigError(
                f"run_dir: {root} holds results of another recipe (it differs in {', '.join(changed)}); "
                f"use a new run_dir or delete {root / RESULTS}"
            )
    (root / CONFIG).write_text(dump_yaml(recipe))
    return records


# ------------------------------------------------------------------------------------------ records
def make_record(point: int, setting: dict[str, Any], problem: Problem, result: SearchResult, seconds: float) -> dict[str, Any]:
    if result.problem_id != problem.id:
        raise ValueError(f"search returned {result.problem_id!r} for problem {problem.id!r}")
    return {"point": point, "setting": setting, **result.as_record(), "prompt": problem.prompt, "gold": problem.answer,
            "seconds": seconds}


def point_summary(setting: dict[str, Any], config: dict[str, Any], records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Accuracy and spend of one point, per problem and in total."""
    n = len(records)

    def total(key: str) -> int:
        return sum(int(r[key]) for r in records)

    return {
        "setting": setting,
        "config": config,
        "problems": n,
        "correct": sum(bool(r["correct"]) for r in records),
        "accuracy": sum(bool(r["correct"]) for r in records) / n if n else 0.0,
        "answered": sum(bool(r["answer"]) for r in records) / n if n else 0.0,
        "mean_tokens": total("tokens") / n if n else 0.0,
        "total_tokens": total("tokens"),
        "mean_policy_calls": total("policy_calls") / n if n else 0.0,
        "total_policy_calls": total("policy_calls"),
        "mean_critic_calls": total("critic_calls") / n if n else 0.0,
        "total_critic_calls": total("critic_calls"),
        "mean_critic_items": total("critic_items") / n if n else 0.0,
        "seconds": round(sum(float(r.get("seconds", 0.0)) for r in records), 3),
    }


def describe_critics(recipe: SearchRecipe) -> dict[str, Any]:
    section = recipe.critics
    members = section.members()
    return {"members": members, "weights": {k: getattr(section.weights, k) for k in members}, "outcome": section.outcome,
            "outcome_tool": section.outcome_tool}


def _chunks(items: Sequence[Problem], size: int) -> Iterator[Sequence[Problem]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


# ------------------------------------------------------------------------------------------ the run
def run_search_eval(recipe: SearchRecipe, *, bar: StageBar = no_bar) -> dict[str, Any]:
    """Run the recipe's search (every sweep point) on the split's distinct problems; write results and
    summary (see the module docstring) and return the summary."""
    began = time.time()
    root = Path(recipe.run_dir)
    earlier = prepare_run_dir(recipe)
    task = make_task(recipe.task.name, recipe.task.params)
    problems = task.distinct_problems(recipe.split, recipe.num_problems, start=recipe.first_problem)
    points = recipe.points()
    wanted = {(setting_key(s), p.id) for s, _ in points for p in problems}
    done: dict[tuple[str, str], dict[str, Any]] = {}
    for r in earlier:
        key = (setting_key(r["setting"]), r["problem_id"])
        if key in wanted:
            done[key] = r

    spec = SEARCHES.get(recipe.search.name)
    extra: dict[str, Any] = {}
    if len(done) < len(wanted):  # something left to search: build the models
        critic, outcome = build_critics(recipe, task)
        policy = load_policy(recipe.model, engine=recipe.engine, seed=recipe.seed)
        check_critics_read_the_policy(policy, [critic, outcome])
        if outcome is not None:
            extra["outcome"] = outcome
        if recipe.env is not None:
            from selfimprove.rollout.conversation import env_run

            extra["env"] = env_run(recipe.env, task, recipe.seed)
        if recipe.rollout_model is not None and takes(recipe.search.name, "rollout_policy"):
            extra["rollout_policy"] = load_policy(recipe.rollout_model, engine=recipe.engine, seed=recipe.seed)

        label = f"search {recipe.search.name}" + (f" sweep {recipe.search.sweep.param}" if recipe.search.sweep else "")
        with bar(label, len(wanted)) as on_step, (root / RESULTS).open("a") as out:
            on_step(len(done), {})
            for index, (setting, config) in enumerate(points):
                key = setting_key(setting)
                pending = [p for p in problems if (key, p.id) not in done]
                for batch in _chunks(pending, recipe.problems_per_batch):
                    start = time.perf_counter()
                    results = spec.run(policy, task, batch, config, critic, None, **extra)
                    share = (time.perf_counter() - start) / len(batch)
                    for problem, result in zip(batch, results, strict=True):
                        record = make_record(index, setting, problem, result, share)
                        done[(key, problem.id)] = record
                        out.write(json.dumps(record) + "\n")
                    out.flush()
                    mine = [done[(key, p.id)] for p in problems if (key, p.id) in done]
                    on_step(len(done), {"eval/accuracy": sum(r["correct"] for r in mine) / len(mine)})

    summary: dict[str, Any] = {
        "run_dir": str(root),
        "model": recipe.model.path,
        "task": recipe.task.name,
        "task_params": recipe.task.params,
        "split": recipe.split,
        "first_problem": recipe.first_problem,
        "num_problems": len(problems),
        "search": recipe.search.name,
        "params": recipe.search.params,
        "sweep": recipe.search.sweep.param if recipe.search.sweep else None,
        "max_tokens": recipe.max_tokens,
        "critics": describe_critics(recipe),
        "uses_gold_answers": recipe.critics.uses_gold_answers,
        "points": [
            point_summary(setting, config.model_dump(mode="json"), [done[(setting_key(setting), p.id)] for p in problems])
            for setting, config in points
        ],
        "wall_seconds": round(time.time() - began, 1),
    }
    if len(points) == 1:  # one configuration: its numbers at the top too
        summary.update({k: v for k, v in summary["points"][0].items() if k not in ("setting", "config")})
    (root / SUMMARY).write_text(json.dumps(summary, indent=2))
    return summary
