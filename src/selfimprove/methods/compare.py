"""`selfimprove compare`: self-correction methods side by side, at the same budget of sampled tokens.

One base model (tiny model -> SFT on a pool of demonstrations -> format warm-up, `methods/warmup.py`)
is the start of every method. Each method then trains from it, with every seed, until the policy has
generated `budget_tokens` tokens in training (the driver's `max_sampled_tokens`), and every result is
evaluated the same way: greedy first attempt, the fixed instruction, greedy second attempt, on the
same held-out problems (`eval/selfcorrect.py`). Methods (SPECS §2):

- `base`: the warm-up model, no training.      - `self_refine`: base model, review-then-retry prompting.
- `star`: STaR for correction (3 rounds).      - `pair_sft`: Pair-SFT.
- `score`: Stage I on `stage1_fraction` of the budget, then Stage II on the rest (best-reward checkpoint).
- `score_no_stage1`: Stage II on the whole budget from the base.
- `score_no_shaping`: Stage I, then Stage II without the shaping bonus.
- `score_single_turn`: single-turn Stage II training on the whole budget.

Layout: `run_dir/{init,sft,base}` (shared by all seeds), `run_dir/seed{S}/{method stage}/` (each a
normal training run that resumes from its checkpoints), `run_dir/seed{S}/eval/{method}.json` (cached
evaluations), `run_dir/summary.json` (per method: the five metrics and the edit-distance ratio, mean
over seeds and per seed, sampled tokens, seconds) and `run_dir/summary.md` (the table). Re-running the
command picks up where it stopped.
"""

from __future__ import annotations

import contextlib
import json
import statistics
import time
from pathlib import Path
from typing import Any, Callable, ContextManager, Iterator, Literal

from pydantic import Field, model_validator

from selfimprove.config import InitRecipe, ModelConfig, SFTRecipe, Strict, TaskSpec, validate
from selfimprove.eval.report import markdown_table
from selfimprove.eval.selfcorrect import evaluate_self_refine, evaluate_two_attempts
from selfimprove.methods.pair_sft import PairSFTRecipe, run_pair_sft
from selfimprove.methods.score import ScoreRecipe, run_score
from selfimprove.methods.star import StarRecipe, run_star
from selfimprove.methods.warmup import WarmupRecipe, run_warmup
from selfimprove.policy.load import load_policy
from selfimprove.policy.tiny import write_tiny_model
from selfimprove.tasks.base import make_task
from selfimprove.train.driver import StepCallback
from selfimprove.train.sft import run_sft

Method = Literal["base", "self_refine", "star", "pair_sft", "score", "score_no_stage1", "score_no_shaping", "score_single_turn"]
ALL_METHODS: tuple[Method, ...] = ("base", "self_refine", "star", "pair_sft", "score", "score_no_stage1", "score_no_shaping", "score_single_turn")
LABELS = {
    "base": "base (format warm-up)",
    "self_refine": "self-refine prompting",
    "star": "STaR (3 rounds)",
    "pair_sft": "Pair-SFT",
    "score": "SCoRe (Stage I + II)",
    "score_no_stage1": "SCoRe without Stage I",
    "score_no_shaping": "SCoRe without shaping",
    "score_single_turn": "single-turn RL",
}
METRICS = ("acc_t1", "acc_t2", "delta", "delta_i_to_c", "delta_c_to_i", "edit_distance_ratio")

StageBar = Callable[[str, int], ContextManager[StepCallback]]


@contextlib.contextmanager
def _no_bar(description: str, total: int) -> Iterator[StepCallback]:
    yield lambda step, metrics: None


class BaseSpec(Strict):
    """How to make the base model: a given model folder, or init + SFT (+ the format warm-up)."""

    model: ModelConfig | None = None  # an existing model to warm up (skips init and SFT)
    init: InitRecipe = Field(default_factory=InitRecipe)
    sft: dict[str, Any] = Field(default_factory=dict)  # SFTRecipe fields (run_dir, model, task, seed are set here)
    warmup: dict[str, Any] = Field(default_factory=dict)  # WarmupRecipe fields
    seed: int = 0


class CompareEval(Strict):
    split: Literal["train", "test"] = "test"
    num_problems: int = Field(500, ge=1)
    max_new_tokens: int = Field(32, ge=1)
    batch_size: int = Field(250, ge=1)


class CompareRecipe(Strict):
    run_dir: str = "runs/selfcorrect-countdown"
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    task: TaskSpec = Field(default_factory=TaskSpec)
    base: BaseSpec = Field(default_factory=BaseSpec)
    methods: list[Method] = Field(default_factory=lambda: list(ALL_METHODS), min_length=1)
    budget_tokens: int = Field(300_000, ge=1)  # sampled tokens each trained method may spend
    stage1_fraction: float = Field(0.3, gt=0.0, lt=1.0)  # share of SCoRe's budget spent in Stage I
    score: dict[str, Any] = Field(default_factory=dict)  # ScoreRecipe fields shared by every SCoRe run
    star: dict[str, Any] = Field(default_factory=dict)  # StarRecipe fields
    pair_sft: dict[str, Any] = Field(default_factory=dict)  # PairSFTRecipe fields
    eval: CompareEval = Field(default_factory=CompareEval)

    @model_validator(mode="after")
    def _sub_recipes_are_valid(self) -> "CompareRecipe":
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


def _score(recipe: CompareRecipe, seed: int, name: str, model: str, budget: int, **score: Any) -> ScoreRecipe:
    fields = dict(recipe.score)
    fields["score"] = {**fields.get("score", {}), **score}
    fields.update(seed=seed, task=recipe.task.model_dump(), model={"path": model}, max_sampled_tokens=budget,
                  run_dir=str(Path(recipe.run_dir) / f"seed{seed}" / name))
    return validate(ScoreRecipe, fields, f"score ({name})")


Stage = tuple[str, Any]  # (stage name, recipe)


def plan(recipe: CompareRecipe, seed: int) -> dict[str, list[Stage]]:
    """The training stages of each method for one seed, in order; the last one's model is evaluated."""
    root = Path(recipe.run_dir) / f"seed{seed}"
    base = base_model_path(recipe)
    total = recipe.budget_tokens
    first = max(1, int(round(total * recipe.stage1_fraction)))
    stage1 = _score(recipe, seed, "score_stage1", base, first, stage="I")
    stage1_model = str(root / "score_stage1" / "final")
    out: dict[str, list[Stage]] = {}
    for method in recipe.methods:
        if method in ("base", "self_refine"):
            out[method] = []
        elif method == "star":
            fields = {**recipe.star, "seed": seed, "task": recipe.task.model_dump(), "model": {"path": base},
                      "star": {**recipe.star.get("star", {}), "max_sampled_tokens": total}, "run_dir": str(root / "star")}
            out[method] = [("star", validate(StarRecipe, fields, "star"))]
        elif method == "pair_sft":
            fields = {**recipe.pair_sft, "seed": seed, "task": recipe.task.model_dump(), "model": {"path": base},
                      "pair_sft": {**recipe.pair_sft.get("pair_sft", {}), "max_sampled_tokens": total}, "run_dir": str(root / "pair_sft")}
            out[method] = [("pair_sft", validate(PairSFTRecipe, fields, "pair_sft"))]
        elif method == "score":
            out[method] = [("score_stage1", stage1), ("score", _score(recipe, seed, "score", stage1_model, total - first, stage="II"))]
        elif method == "score_no_shaping":
            out[method] = [("score_stage1", stage1),
                           ("score_no_shaping", _score(recipe, seed, "score_no_shaping", stage1_model, total - first, stage="II", shaping=False))]
        elif method == "score_no_stage1":
            out[method] = [("score_no_stage1", _score(recipe, seed, "score_no_stage1", base, total, stage="II"))]
        else:  # score_single_turn
            out[method] = [("score_single_turn", _score(recipe, seed, "score_single_turn", base, total, stage="II", single_turn=True))]
    return out


# ------------------------------------------------------------------------------------------ running
RUNNERS: dict[type, Callable[..., dict[str, Any]]] = {
    SFTRecipe: run_sft,
    WarmupRecipe: run_warmup,
    StarRecipe: run_star,
    PairSFTRecipe: run_pair_sft,
    ScoreRecipe: run_score,
}


def _done(run_dir: str | Path) -> dict[str, Any] | None:
    path = Path(run_dir) / "summary.json"
    return json.loads(path.read_text()) if path.exists() else None


def _train(stage: Stage, bar: StageBar) -> dict[str, Any]:
    """Run a stage unless its summary exists (then return that): re-running `compare` resumes."""
    name, stage_recipe = stage
    done = _done(stage_recipe.run_dir)
    if done is not None:
        return done
    with bar(name, stage_recipe.steps) as on_step:
        return RUNNERS[type(stage_recipe)](stage_recipe, on_step)


def evaluated_model(stages: list[Stage], base: str) -> str:
    """The model a method is judged by: SCoRe's best-training-reward checkpoint, else the final model."""
    if not stages:
        return base
    last = stages[-1][1]
    best = Path(last.run_dir) / "best"
    return str(best) if isinstance(last, ScoreRecipe) and (best / "config.json").exists() else str(Path(last.run_dir) / "final")


def build_base(recipe: CompareRecipe, bar: StageBar = _no_bar) -> str:
    root = Path(recipe.run_dir)
    sft, warm = base_recipes(recipe)
    if sft is not None:
        if not (root / "init" / "config.json").exists():
            write_tiny_model(root / "init", recipe.base.init.preset, recipe.base.init.seed, **recipe.base.init.overrides())
        _train(("base: SFT on demonstrations", sft), bar)
    _train(("base: format warm-up", warm), bar)
    return base_model_path(recipe)


def _evaluate(recipe: CompareRecipe, method: str, model: str, out: Path, bar: StageBar) -> dict[str, float]:
    if out.exists():
        return json.loads(out.read_text())["metrics"]
    task = make_task(recipe.task.name, recipe.task.params)
    problems = task.distinct_problems(recipe.eval.split, recipe.eval.num_problems)
    policy = load_policy(ModelConfig(path=model))
    kwargs = {"max_new_tokens": recipe.eval.max_new_tokens, "batch_size": recipe.eval.batch_size}
    with bar(f"eval {method}", 1) as on_step:
        if method == "self_refine":
            metrics, records = evaluate_self_refine(policy, task, problems, **kwargs)
        else:
            metrics, records = evaluate_two_attempts(policy, task, problems, **kwargs)
        on_step(1, {})
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"model": model, "metrics": metrics, "records": records}))
    return metrics


def run_compare(recipe: CompareRecipe, bar: StageBar = _no_bar) -> dict[str, Any]:
    root = Path(recipe.run_dir)
    root.mkdir(parents=True, exist_ok=True)
    began = time.time()
    base = build_base(recipe, bar)
    per_seed: dict[str, list[dict[str, Any]]] = {m: [] for m in recipe.methods}
    for seed in recipe.seeds:
        stages = plan(recipe, seed)
        for method in recipe.methods:
            trained = [_train(stage, bar) for stage in stages[method]]
            model = evaluated_model(stages[method], base)
            metrics = _evaluate(recipe, method, model, root / f"seed{seed}" / "eval" / f"{method}.json", bar)
            per_seed[method].append({
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
        "methods": {m: _aggregate(rows) for m, rows in per_seed.items()},
        "wall_seconds": round(time.time() - began, 1),
    }
    (root / "summary.json").write_text(json.dumps(summary, indent=2))
    (root / "summary.md").write_text(summary_table(summary))
    return summary


def _aggregate(rows: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {k: statistics.fmean(float(r[k]) for r in rows) for k in METRICS}
    if len(rows) > 1:
        out.update({f"{k}_std": statistics.stdev(float(r[k]) for r in rows) for k in ("acc_t1", "acc_t2", "delta")})
    out["sampled_tokens"] = statistics.fmean(r["sampled_tokens"] for r in rows)
    out["per_seed"] = rows
    return out


def summary_table(summary: dict[str, Any]) -> str:
    """The comparison as Markdown: percentages of all problems (mean over seeds, ± std with >1 seed)."""

    def pct(row: dict[str, Any], key: str) -> str:
        text = f"{100 * row[key]:.1f}"
        return text + (f" ± {100 * row[key + '_std']:.1f}" if key + "_std" in row else "")

    rows = [
        [LABELS[m], pct(r, "acc_t1"), pct(r, "acc_t2"), pct(r, "delta"), pct(r, "delta_i_to_c"), pct(r, "delta_c_to_i"),
         f"{r['edit_distance_ratio']:.3f}", f"{int(r['sampled_tokens']):,}"]
        for m, r in summary["methods"].items()
    ]
    header = ["method", "Acc@t1 %", "Acc@t2 %", "Δ", "Δ i→c", "Δ c→i", "edit ratio", "sampled tokens"]
    seeds = ", ".join(str(s) for s in summary["seeds"])
    note = (f"\n\n{summary['eval']['num_problems']} {summary['eval']['split']} problems, greedy; seeds {seeds}; "
            f"budget {summary['budget_tokens']:,} sampled tokens per trained method.\n")
    return markdown_table(header, rows) + note
