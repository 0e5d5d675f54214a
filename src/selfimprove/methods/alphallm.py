"""`selfimprove alphallm RECIPE`: AlphaLLM's loop, closed (Tian et al. 2024; SPECS §5).

Round 0 is the SFT base: its critics are trained on its own rollouts, and it is evaluated. Then each
round r = 1..R:
  (a) **imagine** new prompts from the seed problems (`rollout/imagine.py`: none, rewrite, policy);
  (b) **search** seed + imagined prompts with eta-MCTS, the current policy and critics (or, for the
      RFT baseline, sample answers) at the round's token budget (`search/self_training.py`);
  (c) per prompt keep the finished path with the best outcome-critic score if it is above `gamma`;
  (d) **SFT** on the kept paths (`methods/offline.py`), optionally followed by DPO on sibling steps;
  (e) **re-label and retrain the critics** on the new policy's own rollouts (`critics/run.py`);
  (f) **evaluate** on held-out problems: greedy and eta-MCTS with the new critics (no gold answers).
Every stage writes its outputs under `run_dir/round{r}/` and is skipped when they exist, so the loop
resumes per round and per stage (SFT and DPO resume from their checkpoints; a search or a critic
training that was cut restarts). Every stage reports the tokens the policy generated; `summary.json`
holds one row per round (greedy and search accuracy, paths kept, prompts imagined, tokens).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, model_validator

from selfimprove.config import Recipe, Strict, full_checks, validate
from selfimprove.critics.combined import CombinedCritic
if TYPE_CHECKING:  # loaded when a run starts, not when a recipe is validated
    from selfimprove.search.mcts import MCTSConfig
from selfimprove.critics.recipe import CriticRecipe
from selfimprove.critics.tool import ToolCritic
from selfimprove.methods.base import Method, register_method
from selfimprove.methods.offline import OfflineDPO, OfflineDPORecipe, OfflineSFT, OfflineSFTRecipe, dpo_record, sft_record
from selfimprove.policy.base import CountingSampler
from selfimprove.progress import StageBar, no_bar
from selfimprove.rollout.imagine import ImagineConfig, imagine
from selfimprove.search.self_training import DataConfig, collect_self_data
from selfimprove.tasks.base import Problem, Task
from selfimprove.tasks.plugins import make_task
from selfimprove.train.job import Job, StepCallback

SUMMARY = "summary.json"


class AlphaEval(Strict):
    split: Literal["train", "test"] = "test"
    start: int = Field(0, ge=0)  # first index: `split: train` from far past training is a validation set
    num_problems: int = Field(500, ge=1)
    max_new_tokens: int = Field(32, ge=1)  # greedy answers
    search: bool = True  # also eta-MCTS at test time (learned critics, plus the tool critic when `tool`)
    problems_per_batch: int = Field(100, ge=1)


class AlphaLLMRecipe(Recipe):
    """`model` is the SFT base (round 0); the rest says how each round imagines, searches, keeps,
    trains, re-trains the critics and evaluates."""

    rounds: int = Field(2, ge=1)
    seeds: int = Field(256, ge=1)  # seed problems: train problems first_problem .. first_problem + seeds - 1
    first_problem: int = Field(0, ge=0)
    imagine: ImagineConfig = Field(default_factory=ImagineConfig)
    budget_tokens: int = Field(200_000, ge=1)  # policy tokens per round for imagination and data
    data: DataConfig = Field(default_factory=DataConfig)
    search: dict[str, Any] = Field(default_factory=dict)  # eta-MCTS settings (MCTSConfig), for data and test time
    tool: bool = False  # the gold-free tool critic joins the learned critics (value and outcome)
    critics: dict[str, Any] = Field(default_factory=dict)  # CriticRecipe fields (critics, step_rule, labels, training)
    label_offset: int = Field(100_000, ge=0)  # critics label train problems from first_problem + label_offset
    sft: dict[str, Any] = Field(default_factory=dict)  # OfflineSFTRecipe fields; `epochs` sets the steps
    sft_epochs: float = Field(2.0, gt=0.0)
    dpo: dict[str, Any] | None = None  # OfflineDPORecipe fields: DPO on sibling pairs after the SFT
    eval: AlphaEval = Field(default_factory=AlphaEval)

    @model_validator(mode="after")
    def _parts_are_valid(self) -> "AlphaLLMRecipe":
        if not full_checks():
            return self
        self.mcts_config()
        critic_recipe(self, Path(self.run_dir) / "check", self.model.path, 0)
        if self.data.source == "mcts" and "value" not in critic_recipe(self, Path("-"), "-", 0).critics:
            raise ValueError("data.source 'mcts' values unfinished states: critics.critics must include 'value'")
        return self

    def mcts_config(self) -> MCTSConfig:
        from selfimprove.search.mcts import MCTSConfig

        return validate(MCTSConfig, {"seed": self.seed, **self.search}, "search")


def critic_recipe(recipe: AlphaLLMRecipe, out: Path, policy: str, round_index: int) -> CriticRecipe:
    fields = {"critics": ["value", "orm"], **recipe.critics}
    labels = {**fields.get("labels", {}), "first_problem": recipe.first_problem + recipe.label_offset + round_index * 10_000}
    return validate(CriticRecipe, {**fields, "labels": labels, "run_dir": str(out), "seed": recipe.seed,
                                   "model": {"path": policy}, "task": recipe.task.model_dump(),
                                   "engine": recipe.engine.model_dump()}, "critics")


# ------------------------------------------------------------------------------------------ stages
def _problem_record(p: Problem) -> dict[str, Any]:
    return {"id": p.id, "prompt": p.prompt, "answer": p.answer, "demonstration": p.demonstration,
            "metadata": dict(p.metadata)}


def _problem_of(r: dict[str, Any]) -> Problem:
    demo = r.get("demonstration")
    return Problem(r["id"], r["prompt"], r["answer"], tuple(demo) if demo else None, r.get("metadata") or {})


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tmp.replace(path)


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class Loop:
    """One AlphaLLM run: the recipe, its task and seeds, and the stages of each round."""

    def __init__(self, recipe: AlphaLLMRecipe, bar: StageBar = no_bar) -> None:
        self.recipe, self.bar = recipe, bar
        self.root = Path(recipe.run_dir)
        self.task: Task = make_task(recipe.task.name, recipe.task.params)
        self.seeds = self.task.problems("train", recipe.seeds, start=recipe.first_problem)
        self.search = recipe.mcts_config()

    def _policy(self, path: str, seed: int = 0):  # type: ignore[no-untyped-def]
        from selfimprove.train.models import load_policy

        r = self.recipe
        return load_policy(r.model.model_copy(update={"path": path}), engine=r.engine, seed=seed)

    def critics(self, out: Path, policy: str, round_index: int) -> dict[str, Any]:
        from selfimprove.critics.run import run_critic_training

        if (out / SUMMARY).is_file():
            return json.loads((out / SUMMARY).read_text())
        return run_critic_training(critic_recipe(self.recipe, out, policy, round_index), bar=self.bar)

    def critic_pair(self, critics_dir: Path):  # type: ignore[no-untyped-def]
        """(critic of unfinished states, outcome critic), as AlphaLLM scores (SPECS §5: s = v + PRM + ORM, all
        weights 1): the value function and the PRM when one was trained, averaged, for unfinished states;
        the ORM (else the value function) for finished states and fast rollouts; the tool critic joins
        each as one more equal member when `tool`."""
        from selfimprove.critics.model import load_critic

        states = [load_critic(critics_dir / "value")]
        if (critics_dir / "prm").is_dir():
            states.append(load_critic(critics_dir / "prm"))
        outcomes = [load_critic(critics_dir / "orm") if (critics_dir / "orm").is_dir() else states[0]]
        if self.recipe.tool:
            tool = ToolCritic(self.task)
            states.append(tool)
            outcomes.append(tool)

        def combined(critics: list[Any]) -> Any:
            return critics[0] if len(critics) == 1 else CombinedCritic(critics, name="+".join(c.name for c in critics))

        return combined(states), combined(outcomes)

    def imagine(self, out: Path, policy_path: str, seen: set[str], round_index: int) -> tuple[list[Problem], dict[str, Any]]:
        done = out / "imagined.jsonl"
        if done.is_file():
            stats = json.loads((out / "imagine.json").read_text())
            problems = [_problem_of(r) for r in _read_jsonl(done)]
            seen.update(self.task.key(p) for p in problems)
            return problems, stats
        cfg = self.recipe.imagine
        sampler = self._policy(policy_path, self.recipe.seed) if cfg.kind == "policy" else None
        problems, stats = imagine(cfg, self.task, self.seeds, seen=seen, prefix=f"imagined-r{round_index}",
                                  seed=self.recipe.seed * 1_000 + round_index, sampler=sampler,
                                  chat=self.recipe.model.chat)
        (out / "imagine.json").parent.mkdir(parents=True, exist_ok=True)
        (out / "imagine.json").write_text(json.dumps(stats.as_dict(), indent=2))
        _write_jsonl(done, [_problem_record(p) for p in problems])
        return problems, stats.as_dict()

    def data(self, out: Path, policy_path: str, critics_dir: Path, prompts: list[Problem], budget: int,
             round_index: int) -> dict[str, Any]:
        if (out / "data.json").is_file():
            return json.loads((out / "data.json").read_text())
        policy = self._policy(policy_path, self.recipe.seed)
        value, outcome = self.critic_pair(critics_dir)
        with self.bar(f"round {round_index}: {self.recipe.data.source} data", len(prompts)) as on_step:
            got = collect_self_data(policy, self.task, prompts, self.recipe.data, budget_tokens=budget, search=self.search,
                                    value=value, outcome=outcome, seed=self.recipe.seed * 1_000 + round_index,
                                    on_batch=lambda n: on_step(n, {}))
        _write_jsonl(out / "kept.jsonl", [sft_record(e, policy.detokenize) for e in got.kept])
        _write_jsonl(out / "pairs.jsonl", [dpo_record(a, b, policy.detokenize) for a, b in got.pairs])
        summary = got.summary()
        (out / "data.json").write_text(json.dumps(summary, indent=2))
        return summary

    def train(self, out: Path, policy_path: str, kept: int) -> str:
        """SFT on the kept paths (then DPO on the pairs when configured); the new policy's folder."""
        r = self.recipe
        if kept == 0:
            return policy_path  # nothing kept: the policy stays as it is
        fields = {"batch_size": 32, **r.sft}
        steps = max(1, math.ceil(r.sft_epochs * kept / fields["batch_size"]))
        sft = validate(OfflineSFTRecipe, {
            "schedule": {"checkpoint_every": 50, "eval_every": 0}, "eval": {"num_problems": min(50, r.eval.num_problems), "max_new_tokens": r.eval.max_new_tokens},
            **fields, "steps": steps, "data": str(out / "kept.jsonl"), "run_dir": str(out / "sft"), "seed": r.seed,
            "model": {"path": policy_path}, "task": r.task.model_dump(), "engine": r.engine.model_dump()}, "sft")
        if not (out / "sft" / SUMMARY).is_file():
            with self.bar(f"{out.name}: SFT on {kept} kept paths", steps) as on_step:
                OfflineSFT(sft).run(on_step)
        policy_path = str(out / "sft" / "final")
        pairs = _read_jsonl(out / "pairs.jsonl") if (out / "pairs.jsonl").is_file() else []
        if r.dpo is None or not pairs:
            return policy_path
        dpo = validate(OfflineDPORecipe, {
            "steps": max(1, math.ceil(len(pairs) / r.dpo.get("batch_size", 16))), "schedule": {"checkpoint_every": 50, "eval_every": 0},
            "eval": {"num_problems": min(50, r.eval.num_problems), "max_new_tokens": r.eval.max_new_tokens}, **r.dpo,
            "data": str(out / "pairs.jsonl"), "run_dir": str(out / "dpo"), "seed": r.seed, "model": {"path": policy_path},
            "task": r.task.model_dump(), "engine": r.engine.model_dump()}, "dpo")
        if not (out / "dpo" / SUMMARY).is_file():
            with self.bar(f"{out.name}: DPO on {len(pairs)} pairs", dpo.steps) as on_step:
                OfflineDPO(dpo).run(on_step)
        return str(out / "dpo" / "final")

    def evaluate(self, out: Path, policy_path: str, critics_dir: Path) -> dict[str, Any]:
        """Greedy and eta-MCTS accuracy on the held-out problems (learned critics; no gold answer)."""
        from selfimprove.eval.evaluate import evaluate
        from selfimprove.search.mcts import mcts_search

        if (out / "eval.json").is_file():
            return json.loads((out / "eval.json").read_text())
        e = self.recipe.eval
        problems = self.task.distinct_problems(e.split, e.num_problems, e.start)
        policy = self._policy(policy_path, self.recipe.seed)
        greedy = evaluate(policy, self.task, problems, max_new_tokens=e.max_new_tokens, batch_size=250)
        row: dict[str, Any] = {"greedy": greedy.accuracy, "problems": len(problems)}
        if e.search:
            value, outcome = self.critic_pair(critics_dir)
            counting = CountingSampler(policy)
            right = 0
            with self.bar(f"{out.name}: eta-MCTS at test time", len(problems)) as on_step:
                for start in range(0, len(problems), e.problems_per_batch):
                    batch = problems[start : start + e.problems_per_batch]
                    right += sum(r.correct for r in mcts_search(counting, self.task, batch, self.search, value, outcome=outcome))
                    on_step(start + len(batch), {})
            row.update(search=right / len(problems), search_tokens_per_problem=counting.tokens / len(problems))
        out.mkdir(parents=True, exist_ok=True)
        (out / "eval.json").write_text(json.dumps(row, indent=2))
        return row


def run_alphallm(recipe: AlphaLLMRecipe, bar: StageBar = no_bar) -> dict[str, Any]:
    """Round 0 (the base, its critics, its evaluation), then `rounds` rounds; returns and writes the summary."""
    began = time.time()
    loop = Loop(recipe, bar)
    root = loop.root
    root.mkdir(parents=True, exist_ok=True)
    policy = recipe.model.path
    critics = root / "round0" / "critics"
    labels = loop.critics(critics, policy, 0)
    rows = [{"round": 0, **loop.evaluate(root / "round0", policy, critics), "kept": 0, "imagined": 0,
             "tokens": 0, "label_tokens": labels.get("label_tokens", 0)}]
    seen = {loop.task.key(p) for p in loop.seeds}
    for r in range(1, recipe.rounds + 1):
        out = root / f"round{r}"
        imagined, istats = loop.imagine(out, policy, seen, r)
        budget = max(1, recipe.budget_tokens - int(istats.get("tokens", 0)))
        data = loop.data(out, policy, critics, list(loop.seeds) + imagined, budget, r)
        policy = loop.train(out, policy, int(data["kept"]))
        critics = out / "critics"
        labels = loop.critics(critics, policy, r)
        row = loop.evaluate(out, policy, critics)
        rows.append({"round": r, **row, "kept": data["kept"], "kept_precision": data["kept_precision"],
                     "imagined": len(imagined), "imagine": istats, "tokens": int(data["tokens"]) + int(istats.get("tokens", 0)),
                     "label_tokens": labels.get("label_tokens", 0), "model": policy})
    summary = {"run_dir": str(root), "task": recipe.task.model_dump(), "data": recipe.data.source,
               "imagine": recipe.imagine.kind, "tool": recipe.tool, "seed": recipe.seed, "rounds": rows,
               "wall_seconds": round(time.time() - began, 1)}
    (root / SUMMARY).write_text(json.dumps(summary, indent=2))
    return summary


@register_method
class AlphaLLM(Method[AlphaLLMRecipe]):
    """The loop as a registered method: `selfimprove alphallm RECIPE` (or `run` with `method: alphallm`).
    It is made of several runs (searches, SFT, critics), so it runs its own stages instead of the
    driver's steps."""

    name = "alphallm"
    command = "alphallm"
    help = "AlphaLLM's loop: imagine -> eta-MCTS -> keep by the critics -> SFT -> retrain critics, per round"
    Recipe = AlphaLLMRecipe

    def step(self, job: Job, step: int) -> dict[str, Any]:
        raise NotImplementedError("AlphaLLM runs whole stages (run_alphallm), not driver steps")

    def run(self, on_step: StepCallback | None = None) -> dict[str, Any]:
        return run_alphallm(self.recipe)

    def execute(self, bar: StageBar = no_bar) -> dict[str, Any]:
        return run_alphallm(self.recipe, bar)

    def report(self, summary: dict[str, Any]) -> list[str]:
        lines = [f"AlphaLLM ({summary['data']} data, imagine: {summary['imagine']}, tool critic: {summary['tool']}):"]
        for row in summary["rounds"]:
            search = f", eta-MCTS {row['search']:.1%}" if "search" in row else ""
            lines.append(f"  round {row['round']}: greedy {row['greedy']:.1%}{search}; kept {row['kept']} paths, "
                         f"imagined {row['imagined']}, {row['tokens']:,} tokens")
        lines.append(f"summary: {Path(summary['run_dir']) / SUMMARY}")
        return lines
