"""`selfimprove search` and `selfimprove report`: recipe validation, the evaluation run on the small
model (records add up to the summary, sweeps, resume, critics from folders), the report, the CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from selfimprove.cli import main
from selfimprove.config import ConfigError, load_recipe
from selfimprove.tasks.plugins import make_task
from selfimprove.search.recipe import SearchRecipe
from selfimprove.search.report import PLOT, TABLE, report
from selfimprove.search.run import _with_defaults, read_results, recipe_changes, run_search_eval

RECIPE = Path(__file__).resolve().parent.parent / "recipes" / "search-countdown.yaml"


def small(run_dir: Path, model: Path, *sets: str) -> list[str]:
    """Overrides that make the shipped recipe fast on the small model: 3 problems, short answers."""
    return [f"run_dir={run_dir}", f"model.path={model}", "num_problems=3", "problems_per_batch=2",
            "search.params.max_answer_tokens=12", "critics.batch_size=8", *sets]


def load(*sets: str) -> SearchRecipe:
    return load_recipe(SearchRecipe, RECIPE, ["run_dir=unused", *sets])


def config_error(*sets: str) -> str:
    with pytest.raises(ConfigError) as err:
        load(*sets)
    return str(err.value)


def save_critic(policy: Any, kind: str, folder: Path) -> Path:
    """An untrained critic folder (zero head: every score 0.5), as `selfimprove critic train` writes one."""
    from selfimprove.critics.model import CRITICS

    return CRITICS[kind].from_policy(policy, batch_size=8).save(folder / kind, tokenizer_of=policy)


# ------------------------------------------------------------------------------------------ recipe
def test_the_shipped_recipe_is_a_best_of_n_sweep_ranked_by_the_orm() -> None:
    recipe = load()
    assert recipe.search.name == "best_of_n" and recipe.split == "test"
    assert [s for s, _ in recipe.points()] == [{"n": 1}, {"n": 4}, {"n": 16}, {"n": 64}]
    assert recipe.critics.members() == {"orm": "runs/critic-countdown/orm"}
    assert recipe.task.params["num_numbers"] == 3 and recipe.task.params["format"] == "steps"
    config = recipe.points()[2][1]
    assert config.n == 16 and config.seed == recipe.seed and config.max_tokens is None  # type: ignore[attr-defined]


def test_a_wrong_search_setting_fails_with_its_field_path() -> None:
    assert config_error("search.params.nn=3") == "search.params.nn: unknown field"
    assert config_error("search.params.n=0").startswith("search.params.n: Input should be greater than or equal to 1")
    assert config_error("search.name=bestofn").startswith("search.name: unknown search 'bestofn' (known: beam, best_of_n")
    assert config_error("search.sweep.param=nn").startswith("search.sweep: 'nn' is not a setting of best_of_n")
    assert config_error("search.sweep.values=[4, 0]").startswith("search.sweep.n: Input should be greater than or equal to 1")
    assert config_error("search.params.max_tokens=9").startswith("search.params: set the per-problem token budget")


def test_settings_of_another_search_are_checked_by_that_search() -> None:
    # beam has no `n`: the same sweep and params are wrong once the search changes
    assert config_error("search.name=beam").startswith("search.sweep: 'n' is not a setting of beam")
    message = config_error("search.name=beam", "search.params.n=4", "search.sweep=null")
    assert message == "search.params.n: unknown field"
    beam = load("search.name=beam", "search.params={beam_width: 2, expand: 3}", "search.sweep=null")
    assert beam.points()[0][1].beam_width == 2  # type: ignore[attr-defined]


def test_critics_must_fit_the_search_and_gold_answers_need_the_flag() -> None:
    assert config_error("critics.orm=null").startswith("critics: search 'best_of_n' at {'n': 4} with n > 1 needs a critic")
    assert load("critics.orm=null", "search.name=majority_vote").critics.members() == {}
    assert config_error("critics.verifier=true").startswith("critics: the verifier reads the gold answers")
    with_gold = load("critics.verifier=true", "critics.uses_gold_answers=true")
    assert with_gold.critics.members() == {"orm": "runs/critic-countdown/orm", "verifier": None}
    assert config_error("critics.uses_gold_answers=true").startswith("critics: critics.uses_gold_answers is set")
    assert config_error("critics.outcome=some/orm").startswith("critics: outcome: search 'best_of_n' takes no separate outcome critic")
    assert config_error("rollout_model.path=tiny").startswith("rollout_model: search 'best_of_n' has no fast rollouts")
    assert config_error("critics.weights.orm=0").startswith("critics: the weights of the configured critics (orm) are all 0")


def test_the_token_budget_reaches_every_point_unless_the_sweep_varies_it() -> None:
    recipe = load("max_tokens=50")
    assert {c.max_tokens for _, c in recipe.points()} == {50}
    swept = load("max_tokens=50", "search.sweep={param: max_tokens, values: [10, 100]}")
    assert [c.max_tokens for _, c in swept.points()] == [10, 100]


def test_a_resumed_run_may_change_only_problem_count_batching_and_sweep_values() -> None:
    old = load().model_dump(mode="json")
    assert recipe_changes(old, load("num_problems=7", "problems_per_batch=3", "search.sweep.values=[1, 2]").model_dump(mode="json")) == []
    assert recipe_changes(old, load("search.params.temperature=0.5").model_dump(mode="json")) == ["search.params.temperature"]


def test_a_run_resumes_across_path_spellings_and_fields_added_since(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "model").mkdir()
    monkeypatch.chdir(tmp_path)
    old = load("model.path=model").model_dump(mode="json")
    absolute = load(f"model.path={tmp_path / 'model'}").model_dump(mode="json")
    assert recipe_changes(old, absolute) == []  # one folder, two spellings
    assert recipe_changes(old, load(f"model.path={tmp_path}").model_dump(mode="json")) == ["model.path"]
    del old["engine"]["workers"]  # a run made before the field existed ran with its default
    assert recipe_changes(_with_defaults(old), absolute) == []
    assert recipe_changes(old, absolute) == ["engine.workers"]


# ------------------------------------------------------------------------------------------ run
def test_search_eval_writes_records_that_add_up_to_the_summary(small_model_dir: Path, tmp_path: Path) -> None:
    recipe = load_recipe(SearchRecipe, RECIPE, small(tmp_path / "run", small_model_dir, "search.name=majority_vote",
                                                     "critics.orm=null", "search.sweep.values=[1, 3]"))
    steps: list[int] = []

    class Bar:  # records what the progress bar was told
        def __init__(self, description: str, total: int) -> None:
            self.total = total

        def __enter__(self):  # noqa: ANN204
            return lambda step, metrics: steps.append(step)

        def __exit__(self, *exc: object) -> None:
            return None

    summary = run_search_eval(recipe, bar=Bar)
    records = read_results(tmp_path / "run" / "results.jsonl")
    assert len(records) == 6 and steps[0] == 0 and steps[-1] == 6
    assert [p["setting"] for p in summary["points"]] == [{"n": 1}, {"n": 3}]
    for index, point in enumerate(summary["points"]):
        mine = [r for r in records if r["point"] == index]
        assert len(mine) == point["problems"] == 3 and len({r["problem_id"] for r in mine}) == 3
        assert point["total_tokens"] == sum(r["tokens"] for r in mine) > 0
        assert point["mean_tokens"] == pytest.approx(point["total_tokens"] / 3)
        assert point["correct"] == sum(r["correct"] for r in mine) and point["accuracy"] == point["correct"] / 3
        assert point["total_policy_calls"] == sum(r["policy_calls"] for r in mine) and point["total_critic_calls"] == 0
        assert all(r["candidates"] == point["setting"]["n"] and r["gold"] and r["prompt"] for r in mine)
        assert all(r["tokens"] <= point["setting"]["n"] * 12 for r in mine)  # the answer cap, per sample
    assert summary["points"][1]["total_tokens"] > summary["points"][0]["total_tokens"]  # 3 samples cost more
    assert json.loads((tmp_path / "run" / "summary.json").read_text()) == summary
    assert summary["search"] == "majority_vote" and summary["sweep"] == "n" and summary["uses_gold_answers"] is False


def test_a_validation_run_starts_at_first_problem(small_model_dir: Path, tmp_path: Path) -> None:
    """Train problems past the training data (a validation slice): the run searches the split's distinct
    problems from `first_problem`, and a resumed run may not move them."""
    recipe = load_recipe(SearchRecipe, RECIPE, small(tmp_path / "run", small_model_dir, "search.name=majority_vote", "search.sweep=null",
                                                     "critics.orm=null", "split=train", "first_problem=5000"))
    summary = run_search_eval(recipe)
    task = make_task(recipe.task.name, recipe.task.params)
    wanted = [p.id for p in task.distinct_problems("train", 3, start=5000)]
    assert sorted(r["problem_id"] for r in read_results(tmp_path / "run" / "results.jsonl")) == sorted(wanted)
    assert summary["first_problem"] == 5000 and wanted != [p.id for p in task.distinct_problems("train", 3)]
    assert recipe_changes(load().model_dump(mode="json"), load("first_problem=5000").model_dump(mode="json")) == ["first_problem"]


def test_a_rerun_resumes_and_an_extended_run_searches_only_the_new_problems(small_model_dir: Path, tmp_path: Path) -> None:
    sets = small(tmp_path / "run", small_model_dir, "search.name=greedy", "search.params=null", "search.params={max_answer_tokens: 12}",
                 "critics.orm=null",
                 "search.sweep=null")
    first = run_search_eval(load_recipe(SearchRecipe, RECIPE, sets))
    path = tmp_path / "run" / "results.jsonl"
    before = path.read_text()
    again = run_search_eval(load_recipe(SearchRecipe, RECIPE, sets))
    assert path.read_text() == before and again["points"] == first["points"]  # nothing searched twice
    path.write_text(before + '{"point": 0, "setting"')  # a crash cut the last line short
    more = run_search_eval(load_recipe(SearchRecipe, RECIPE, [*sets, "num_problems=5"]))
    records = read_results(path)
    assert len(records) == 5 and records[:3] == [json.loads(line) for line in before.splitlines()]
    assert more["num_problems"] == 5 and more["total_tokens"] == sum(r["tokens"] for r in records)
    assert more["accuracy"] == more["points"][0]["accuracy"]  # one point: its numbers at the top too
    with pytest.raises(ConfigError, match=r"holds results of another recipe \(it differs in search.params.max_answer_tokens\)"):
        run_search_eval(load_recipe(SearchRecipe, RECIPE, [*sets, "search.params.max_answer_tokens=8"]))


def test_best_of_n_ranks_by_critic_folders_combined_and_counts_critic_calls(small_policy: Any, small_model_dir: Path, tmp_path: Path) -> None:
    orm = save_critic(small_policy, "orm", tmp_path / "critics")
    value = save_critic(small_policy, "value", tmp_path / "critics")
    sets = small(tmp_path / "run", small_model_dir, f"critics.orm={orm}", f"critics.value={value}", "search.sweep.values=[2]",
                 "max_tokens=20")
    summary = run_search_eval(load_recipe(SearchRecipe, RECIPE, sets))
    records = read_results(tmp_path / "run" / "results.jsonl")
    assert summary["critics"]["members"] == {"value": str(value), "orm": str(orm)}
    # the combined critic calls both members: two calls of the 2 candidates each (issue 26: it was charged as one)
    assert all(r["critic_calls"] == 2 and r["critic_items"] == 2 * r["candidates"] == 4 for r in records)
    assert all(r["score"] == pytest.approx(0.5) and r["max_tokens"] == 20 for r in records)  # zero heads: 0.5 each
    assert summary["points"][0]["config"]["max_tokens"] == 20


def test_the_verifier_critic_runs_only_flagged_and_the_summary_says_so(small_model_dir: Path, tmp_path: Path) -> None:
    sets = small(tmp_path / "run", small_model_dir, "critics.orm=null", "critics.verifier=true", "critics.uses_gold_answers=true",
                 "split=train", "search.sweep.values=[2]")
    summary = run_search_eval(load_recipe(SearchRecipe, RECIPE, sets))
    records = read_results(tmp_path / "run" / "results.jsonl")
    assert summary["uses_gold_answers"] is True and summary["split"] == "train"
    assert summary["critics"]["members"] == {"verifier": None}
    assert all(r["score"] == float(r["correct"]) and r["critic_calls"] == 1 for r in records)  # exact 1/0 on the chosen


def test_a_critic_of_another_tokenizer_is_refused(small_policy: Any, small_model_dir: Path, tmp_path: Path) -> None:
    orm = save_critic(small_policy, "orm", tmp_path / "critics")
    info = json.loads((orm / "critic.json").read_text())
    (orm / "critic.json").write_text(json.dumps({**info, "eos_ids": [12345]}))
    recipe = load_recipe(SearchRecipe, RECIPE, small(tmp_path / "run", small_model_dir, f"critics.orm={orm}"))
    with pytest.raises(ConfigError, match="the orm critic reads another tokenizer"):
        run_search_eval(recipe)


def test_mcts_gets_its_outcome_critic_separately(small_policy: Any, small_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from selfimprove.search.mcts import MCTSConfig, mcts_search
    from selfimprove.search.registry import SEARCHES, SearchSpec

    if "mcts" not in SEARCHES:  # registry.py names the line; register it for this test only
        monkeypatch.setitem(SEARCHES._items, "mcts", SearchSpec(MCTSConfig, mcts_search))
    value = save_critic(small_policy, "value", tmp_path / "critics")
    orm = save_critic(small_policy, "orm", tmp_path / "critics")
    sets = small(tmp_path / "run", small_model_dir, "search.name=mcts", "search.params={simulations: 2, branching: 2, max_depth: 2, max_answer_tokens: 12}",
                 "search.sweep=null", "critics.orm=null", f"critics.value={value}", f"critics.outcome={orm}")
    summary = run_search_eval(load_recipe(SearchRecipe, RECIPE, sets))
    records = read_results(tmp_path / "run" / "results.jsonl")
    assert summary["critics"] == {"members": {"value": str(value)}, "weights": {"value": 1.0}, "outcome": str(orm), "outcome_tool": False}
    assert all(r["search"] == "mcts" and r["critic_calls"] > 0 and r["stats"]["rounds"] >= 1 for r in records)
    assert summary["total_tokens"] == sum(r["tokens"] for r in records) > 0


# ------------------------------------------------------------------------------------------ report
def fake_run(folder: Path, search: str, points: list[tuple[dict[str, Any], float, float]], gold: bool = False) -> Path:
    folder.mkdir(parents=True)
    rows = [{"setting": s, "accuracy": acc, "mean_tokens": tokens, "mean_policy_calls": 1.0, "mean_critic_calls": 2.0, "problems": 10}
            for s, acc, tokens in points]
    (folder / "summary.json").write_text(json.dumps({"search": search, "uses_gold_answers": gold, "points": rows}))
    return folder


def test_report_draws_every_run_and_tables_every_point(tmp_path: Path) -> None:
    bon = fake_run(tmp_path / "a" / "bon", "best_of_n", [({"n": 1}, 0.2, 10.0), ({"n": 4}, 0.35, 41.5)])
    vote = fake_run(tmp_path / "b" / "vote", "majority_vote", [({}, 0.3, 40.0)], gold=True)
    plot, table = report([bon, vote], tmp_path / "out")
    assert plot == tmp_path / "out" / PLOT and plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = table.read_text()
    assert "| run | search | setting | accuracy | tokens/problem | policy calls | critic calls | problems |" in text
    assert "| bon | best_of_n | n=4 | 35.0% | 41.5 | 1.00 | 2.00 | 10 |" in text
    assert "| vote (gold) | majority_vote | - | 30.0% | 40.0 |" in text
    assert text.count("| bon |") == 2
    same_name = fake_run(tmp_path / "c" / "bon", "beam", [({}, 0.5, 30.0)])
    _, table = report([bon, same_name], tmp_path / "out2")
    assert f"| {bon} |" in table.read_text() and f"| {same_name} |" in table.read_text()  # names clash: full paths


def test_report_of_a_folder_without_a_summary_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="has no summary.json"):
        report([tmp_path], tmp_path / "out")


# ------------------------------------------------------------------------------------------ CLI
def test_cli_search_then_report(small_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "vote"
    argv = ["search", str(RECIPE)]
    for item in small(run, small_model_dir, "search.name=majority_vote", "critics.orm=null", "search.sweep.values=[1, 2]"):
        argv += ["--set", item]
    assert main(argv) == 0
    out = capsys.readouterr().out  # the results table: Markdown on stdout when it is not a terminal
    assert "majority_vote on 3 test countdown problems" in out and "| n=2 |" in out and "tokens/problem" in out
    assert main(["report", str(run), "--out", str(tmp_path / "report")]) == 0
    out = capsys.readouterr().out
    assert "| vote | majority_vote | n=1 |" in out and "| vote | majority_vote | n=2 |" in out
    assert (tmp_path / "report" / PLOT).is_file() and (tmp_path / "report" / TABLE).is_file()


def test_cli_errors_exit_2_before_anything_is_written(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["search", str(RECIPE), "--set", f"run_dir={tmp_path / 'r'}", "--set", "search.params.nn=1"]) == 2
    assert "config error: search.params.nn: unknown field" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
    assert main(["search", str(RECIPE), "--set", f"run_dir={tmp_path / 'r'}", "--set", "model.path=tiny:small",
                 "--set", f"critics.orm={tmp_path / 'none'}"]) == 2
    assert "is not a critic folder" in capsys.readouterr().err
    assert main(["report", str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    assert "holds no run" in capsys.readouterr().err
