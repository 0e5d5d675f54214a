"""`selfimprove compare`: methods side by side from one base model, at the same budget of sampled tokens.

One base model (tiny model -> SFT on a pool of demonstrations -> format warm-up, `methods/warmup.py`)
is the start of every *arm*. An arm is a list of stages, each a run of any registered method (the
first from the base, the next from the previous stage's final model), plus the evaluation protocol.
Every stage's share of `budget_tokens` goes where its method says (`Method.budget_path`: the driver's
`max_sampled_tokens`, or STaR's and Pair-SFT's own sampling budgets), so every trained arm spends the
same budget; every arm is evaluated the same way on the same held-out problems (`eval/selfcorrect.py`:
greedy first attempt, the fixed instruction, greedy second attempt; or self-refine prompting).

Built-in arms (SPECS §2), used when the recipe lists none, or by name in `arms:`:
- `base`: the warm-up model, no training.      - `self_refine`: base model, review-then-retry prompting.
- `star`: STaR for correction (3 rounds).      - `pair_sft`: Pair-SFT.
- `score`: Stage I on 30% of the budget, then Stage II on the rest (best-reward checkpoint).
- `score_no_stage1`: Stage II on the whole budget from the base.
- `score_no_shaping`: Stage I, then Stage II without the shaping bonus.
- `score_single_turn`: single-turn Stage II training on the whole budget.
A stage's recipe is `defaults[method]` with the stage's `set` fields over it, plus the seed, task,
start model, budget and run folder. Stages with the same name share one run (SCoRe's Stage I).

Layout: `run_dir/{init,sft,base}` (shared by all seeds), `run_dir/seed{S}/{stage}/` (each a normal
training run that resumes from its checkpoints), `run_dir/seed{S}/eval/{arm}.json` (cached
evaluations), `run_dir/summary.json` (per arm: the five metrics and the edit-distance ratio, mean over
seeds and per seed, sampled tokens, seconds) and `run_dir/summary.md` (the table). Re-running the
command picks up where it stopped.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from selfimprove.config import full_checks, InitRecipe, ModelConfig, SFTRecipe, Strict, TaskSpec, validate
from selfimprove.eval.report import markdown_table
from selfimprove.eval.selfcorrect import evaluate_self_refine, evaluate_two_attempts
from selfimprove.methods.base import Method, find_method
from selfimprove.methods.sft import SFT
from selfimprove.methods.warmup import Warmup, WarmupRecipe
from selfimprove.tasks.plugins import make_task
from selfimprove.progress import StageBar, no_bar

METRICS = ("acc_t1", "acc_t2", "delta", "delta_i_to_c", "delta_c_to_i", "edit_distance_ratio")





class BaseSpec(Strict):
    """How to make the base model: a given model folder, or init + SFT (+ the format warm-up)."""

    model: ModelConfig | None = None  # an existing model to warm up (skips init and SFT)
    init: InitRecipe = Field(default_factory=InitRecipe)
    sft: dict[str, Any] = Field(default_factory=dict)  # SFTRecipe fields (run_dir, model, task, seed are set here)
    warmup: dict[str, Any] = Field(default_factory=dict)  # WarmupRecipe fields
    seed: int = 0


class StageSpec(Strict):
    """One training run of an arm: a registered method, its share of the budget and its own fields."""

    method: str
    name: str | None = None  # the run folder (default: the arm's name); stages with one name share a run
    budget: float | None = Field(None, gt=0.0, le=1.0)  # share of budget_tokens; None: what earlier stages left
    set: dict[str, Any] = Field(default_factory=dict)  # recipe fields over `defaults[method]`, section by section


class ArmSpec(Strict):
    name: str
    label: str | None = None
    stages: list[StageSpec] = Field(default_factory=list)
    protocol: Literal["two_attempts", "self_refine"] = "two_attempts"


def _score(name: str | None = None, budget: float | None = None, **fields: Any) -> dict[str, Any]:
    return {"method": "score", "name": name, "budget": budget, "set": {"score": fields}}


BUILTIN_ARMS: dict[str, dict[str, Any]] = {
    "base": {"label": "base (format warm-up)"},
    "self_refine": {"label": "self-refine prompting", "protocol": "self_refine"},
    "star": {"label": "STaR (3 rounds)", "stages": [{"method": "star"}]},
    "pair_sft": {"label": "Pair-SFT", "stages": [{"method": "pair_sft"}]},
    "score": {"label": "SCoRe (Stage I + II)", "stages": [_score("score_stage1", 0.3, stage="I"), _score(stage="II")]},
    "score_no_stage1": {"label": "SCoRe without Stage I", "stages": [_score(stage="II")]},
    "score_no_shaping": {"label": "SCoRe without shaping",
                         "stages": [_score("score_stage1", 0.3, stage="I"), _score(stage="II", shaping=False)]},
    "score_single_turn": {"label": "single-turn RL", "stages": [_score(stage="II", single_turn=True)]},
}


class CompareEval(Strict):
    split: Literal["train", "test"] = "test"
    start: int = Field(0, ge=0)  # first index: `split: train` from far past training is a validation set
    num_problems: int = Field(500, ge=1)
    max_new_tokens: int = Field(32, ge=1)
    batch_size: int = Field(250, ge=1)


class CompareRecipe(Strict):
    run_dir: str = "runs/selfcorrect-countdown"
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    task: TaskSpec = Field(default_factory=TaskSpec)
    base: BaseSpec = Field(default_factory=BaseSpec)
    arms: list[ArmSpec] = Field(default_factory=lambda: [ArmSpec(name=n, **a) for n, a in BUILTIN_ARMS.items()], min_length=1)
    budget_tokens: int = Field(300_000, ge=1)  # sampled tokens each trained arm may spend
    defaults: dict[str, dict[str, Any]] = Field(default_factory=dict)  # recipe fields per method name
    eval: CompareEval = Field(default_factory=CompareEval)

    @field_validator("arms", mode="before")
    @classmethod
    def _builtin_names(cls, v: Any) -> Any:
        if not isinstance(v, list):
            return v
        out = []
        for arm in v:
            if isinstance(arm, str):
                if arm not in BUILTIN_ARMS:
                    raise ValueError(f"unknown built-in arm {arm!r} (known: {', '.join(BUILTIN_ARMS)})")
                arm = {"name": arm, **BUILTIN_ARMS[arm]}
            out.append(arm)
        return out

    @model_validator(mode="after")
    def _sub_recipes_are_valid(self) -> "CompareRecipe":
        names = [a.name for a in self.arms]
        if len(set(names)) != len(names):
            raise ValueError(f"arm names repeat: {names}")
        if not full_checks():
            return self
        # Build every stage's recipe once now, so a bad field fails before hours of training.
        plan(self, self.seeds[0])
        base_recipes(self)
        return self


# ------------------------------------------------------------------------------ recipes of the stages
def base_recipes(recipe: CompareRecipe) -> tuple[SFTRecipe | None, WarmupRecipe]:
    root = Path(recipe.run_dir)
    shared = {"seed": recipe.base.seed, "task": recipe.task.model_dump()}
    sft = None
    start = recipe.base.model.model_dump() if recipe.base.model else {"path": str(root / "sft" / "final")}
    if recipe.base.model is None:
        sft = validate(SFTRecipe, {**recipe.base.sft, **shared, "run_dir": str(root / "sft"), "model": {"path": str(root / "init")}}, "base.sft")
    warm = validate(WarmupRecipe, {**recipe.base.warmup, **shared, "run_dir": str(root / "base"), "model": start}, "base.warmup")
    return sft, warm


def base_model_path(recipe: CompareRecipe) -> str:
    return str(Path(recipe.run_dir) / "base" / "final")


def stage_budgets(arm: ArmSpec, total: int) -> list[int]:
    """Each stage's tokens: its share (at least 1) or, without one, what the stages before it left."""
    out: list[int] = []
    for stage in arm.stages:
        out.append(max(1, int(round(total * stage.budget))) if stage.budget is not None else total - sum(out))
    if any(b < 1 for b in out):
        raise ValueError(f"arm {arm.name!r}: its stages' budget shares add up to more than the budget")
    return out


def merged(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """`over` on top of `base`, section by section (a copy; neither is changed)."""
    out = json.loads(json.dumps(base))
    for key, value in over.items():
        out[key] = merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _with_budget(fields: dict[str, Any], path: str, tokens: int) -> dict[str, Any]:
    *sections, last = path.split(".")
    node = fields
    for part in sections:
        node = node.setdefault(part, {})
    node[last] = tokens
    return fields


Stage = tuple[str, Method[Any]]  # (run folder, the method on its recipe)


def plan(recipe: CompareRecipe, seed: int) -> dict[str, list[Stage]]:
    """The training stages of each arm for one seed, in order; the last one's model is evaluated."""
    root = Path(recipe.run_dir) / f"seed{seed}"
    out: dict[str, list[Stage]] = {}
    built: dict[str, Stage] = {}
    for arm in recipe.arms:
        stages: list[Stage] = []
        model = base_model_path(recipe)
        for stage, tokens in zip(arm.stages, stage_budgets(arm, recipe.budget_tokens)):
            name = stage.name or arm.name
            method = find_method(stage.method)
            fields = merged(recipe.defaults.get(stage.method, {}), stage.set)
            fields.update(seed=seed, task=recipe.task.model_dump(), model={"path": model}, run_dir=str(root / name),
                          method=method.name)
            fields = _with_budget(fields, method.budget_path, tokens)
            run = method(validate(method.Recipe, fields, f"arms.{arm.name}.{name}"))
            if name in built and built[name][1].recipe != run.recipe:
                raise ValueError(f"arm {arm.name!r}: stage {name!r} is another arm's stage with other settings")
            built.setdefault(name, (name, run))
            stages.append(built[name])
            model = str(root / name / "final")
        out[arm.name] = stages
    return out


# ------------------------------------------------------------------------------------------ running
def _train(name: str, method: Method[Any], bar: StageBar) -> dict[str, Any]:
    """Run a stage unless its summary exists (then return that): re-running `compare` resumes."""
    done = Path(method.recipe.run_dir) / "summary.json"
    if done.exists():
        return json.loads(done.read_text())
    with bar(name, method.recipe.steps) as on_step:
        return method.run(on_step)


def evaluated_model(stages: list[Stage], base: str, summaries: list[dict[str, Any]]) -> str:
    """The model an arm is judged by: the last stage's best checkpoint when its method keeps one (SCoRe's
    best training reward), else its final model; the base model for an arm without training."""
    if not stages:
        return base
    best = summaries[-1].get("best_model")
    if best and (Path(best) / "config.json").exists():
        return str(best)
    return str(Path(stages[-1][1].recipe.run_dir) / "final")


def build_base(recipe: CompareRecipe, bar: StageBar = no_bar) -> str:
    from selfimprove.policy.tiny import write_tiny_model

    root = Path(recipe.run_dir)
    sft, warm = base_recipes(recipe)
    if sft is not None:
        if not (root / "init" / "config.json").exists():
            write_tiny_model(root / "init", recipe.base.init.preset, recipe.base.init.seed, **recipe.base.init.overrides())
        _train("base: SFT on demonstrations", SFT(sft), bar)
    _train("base: format warm-up", Warmup(warm), bar)
    return base_model_path(recipe)


def _evaluate(recipe: CompareRecipe, arm: ArmSpec, model: str, out: Path, bar: StageBar) -> dict[str, float]:
    from selfimprove.train.models import load_policy

    if out.exists():
        return json.loads(out.read_text())["metrics"]
    task = make_task(recipe.task.name, recipe.task.params)
    problems = task.distinct_problems(recipe.eval.split, recipe.eval.num_problems, recipe.eval.start)
    policy = load_policy(ModelConfig(path=model))
    run = evaluate_self_refine if arm.protocol == "self_refine" else evaluate_two_attempts
    with bar(f"eval {arm.name}", 1) as on_step:
        metrics, records = run(policy, task, problems, max_new_tokens=recipe.eval.max_new_tokens, batch_size=recipe.eval.batch_size)
        on_step(1, {})
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"model": model, "metrics": metrics, "records": records}))
    return metrics


def run_compare(recipe: CompareRecipe, bar: StageBar = no_bar) -> dict[str, Any]:
    root = Path(recipe.run_dir)
    root.mkdir(parents=True, exist_ok=True)
    began = time.time()
    base = build_base(recipe, bar)
    per_seed: dict[str, list[dict[str, Any]]] = {a.name: [] for a in recipe.arms}
    for seed in recipe.seeds:
        stages = plan(recipe, seed)
        for arm in recipe.arms:
            trained = [_train(name, method, bar) for name, method in stages[arm.name]]
            model = evaluated_model(stages[arm.name], base, trained)
            metrics = _evaluate(recipe, arm, model, root / f"seed{seed}" / "eval" / f"{arm.name}.json", bar)
            per_seed[arm.name].append({
                "seed": seed,
                **metrics,
                "sampled_tokens": sum(int(s.get("sampled_tokens", 0)) for s in trained),
                "train_seconds": round(sum(float(s.get("train_seconds", 0.0)) for s in trained), 1),
                "model": model,
            })
    summary = {
        "task": recipe.task.model_dump(),
        "seeds": recipe.seeds,
        "budget_tokens": recipe.budget_tokens,
        "eval": recipe.eval.model_dump(),
        "base_model": base,
        "labels": {a.name: a.label or a.name for a in recipe.arms},
        "methods": {name: _aggregate(rows) for name, rows in per_seed.items()},
        "wall_seconds": round(time.time() - began, 1),
    }
    (root / "summary.json").write_text(json.dumps(summary, indent=2))
    (root / "summary.md").write_text(summary_table(summary))
    return summary


def _aggregate(rows: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {k: statistics.fmean(float(r[k]) for r in rows) for k in METRICS}
    if len(rows) > 1:
        for k in METRICS[:5]:
            spread = statistics.stdev(float(r[k]) for r in rows)
            out[f"{k}_std"], out[f"{k}_se"] = spread, spread / len(rows) ** 0.5
    out["sampled_tokens"] = statistics.fmean(r["sampled_tokens"] for r in rows)
    out["per_seed"] = rows
    return out


def summary_table(summary: dict[str, Any]) -> str:
    """The comparison as Markdown: percentages of all problems (mean over seeds, ± standard error with >1 seed)."""

    def pct(row: dict[str, Any], key: str) -> str:
        text = f"{100 * row[key]:.1f}"
        return text + (f" ± {100 * row[key + '_se']:.1f}" if key + "_se" in row else "")

    labels = summary.get("labels", {})
    rows = [
        [labels.get(m, m), pct(r, "acc_t1"), pct(r, "acc_t2"), pct(r, "delta"), pct(r, "delta_i_to_c"), pct(r, "delta_c_to_i"),
         f"{r['edit_distance_ratio']:.3f}", f"{int(r['sampled_tokens']):,}"]
        for m, r in summary["methods"].items()
    ]
    header = ["method", "Acc@t1 %", "Acc@t2 %", "Δ", "Δ i→c", "Δ c→i", "edit ratio", "sampled tokens"]
    seeds = ", ".join(str(s) for s in summary["seeds"])
    e = summary["eval"]
    where = f" from index {e['start']:,} (validation)" if e.get("start") else ""
    spread = "; mean ± standard error over seeds" if len(summary["seeds"]) > 1 else ""
    note = (f"\n\n{e['num_problems']} {e['split']} problems{where}, greedy; seeds {seeds}{spread}; "
            f"budget {summary['budget_tokens']:,} sampled tokens per trained method.\n")
    return markdown_table(header, rows) + note
