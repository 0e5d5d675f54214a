"""Your own task, data and reward without touching the library: a task class by import path or entry
point, the generic `dataset` task with a verifier by name or a TRL-style reward function, parameters
listed from a task's schema, and a run's records exported as HF datasets in TRL's columns."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
import yaml

from selfimprove.cli import main
from selfimprove.config import ConfigError, SFTRecipe, load_recipe
from selfimprove.errors import DataError
from selfimprove.tasks import make_task, resolve_task
from selfimprove.tasks.rewards import judge_by_name

ROOT = Path(__file__).resolve().parent.parent

TASK_MODULE = textwrap.dedent('''
    from selfimprove.tasks import Problem, TaskConfig, Verdict
    from selfimprove.tasks.base import GeneratedTask


    class EchoConfig(TaskConfig):
        word: str = "abc"
        """The word to echo."""


    class EchoTask(GeneratedTask):
        """Echo the word."""

        Config = EchoConfig

        def draw(self, rng, split, index):
            word = self.config.word + str(rng.randint(0, 10**6))
            if not self.in_split(word, split):
                return None
            return Problem(id=f"echo-{index}", prompt=f"echo {word}:", answer=word, demonstration=(word,))

        def judge(self, problem, text):
            return Verdict.right() if text.strip() == problem.answer else Verdict.wrong("no")
''')


@pytest.fixture
def plugin_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "echo_tasks.py").write_text(TASK_MODULE)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_a_task_by_import_path_from_the_working_directory(plugin_dir: Path) -> None:
    task = make_task("echo_tasks:EchoTask", {"word": "xy"})
    problem = task.problem("train", 0)
    assert problem.prompt.startswith("echo xy") and task.verify(problem, problem.answer).correct
    assert resolve_task("echo_tasks:EchoTask").name == "echo_tasks:EchoTask"
    with pytest.raises(ConfigError, match=r"task.params.wurd: unknown field"):
        load_recipe(SFTRecipe, None, ["run_dir=r", "task.name=echo_tasks:EchoTask", "task.params.wurd=1"])


def test_import_path_errors_name_the_field(plugin_dir: Path) -> None:
    with pytest.raises(ConfigError, match="task.name: 'echo_tasks' has no 'Nope'"):
        resolve_task("echo_tasks:Nope")
    (plugin_dir / "not_a_task.py").write_text("class X:\n    pass\n")
    with pytest.raises(ConfigError, match="is not a Task subclass"):
        resolve_task("not_a_task:X")
    with pytest.raises(ConfigError, match="unknown task 'nothing'"):
        resolve_task("nothing")


def test_a_task_from_an_installed_packages_entry_point(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "echo_plugin.py").write_text(TASK_MODULE)
    info = site / "echo_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: echo-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[selfimprove.tasks]\necho = echo_plugin:EchoTask\n")
    monkeypatch.syspath_prepend(str(site))
    task = make_task("echo", {"word": "q"})
    assert task.problem("test", 0).prompt.startswith("echo q")
    assert main(["tasks"]) == 0
    assert "echo" in capsys.readouterr().out


def test_tasks_params_prints_every_parameter_with_type_default_and_doc(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tasks", "--params", "gsm8k"]) == 0
    out = capsys.readouterr().out
    for line in ("  test_path: str | None = None", "  abs_tol: float | None = None", "  test_fraction: float = 0.1"):
        assert line in out
    assert "A separate test file" in out
    assert main(["tasks", "--params", "dataset"]) == 0
    assert "  reward: str | list[str] | None = None" in capsys.readouterr().out


# --------------------------------------------------------------------------------------- dataset task
def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


ROWS = [{"q": f"{i}+{i}", "a": 2 * i, "sol": f"{i}+{i}={2 * i}"} for i in range(200)]


@pytest.mark.parametrize("fmt", ["jsonl", "json", "csv", "parquet", "saved"])
def test_the_dataset_task_reads_every_format(tmp_path: Path, fmt: str) -> None:
    from datasets import Dataset

    data = Dataset.from_list(ROWS)
    path = tmp_path / f"data.{fmt}"
    if fmt == "jsonl":
        _write(path, ROWS)
    elif fmt == "json":
        path.write_text(json.dumps(ROWS))
    elif fmt == "csv":
        data.to_csv(str(path), index=False)
    elif fmt == "parquet":
        data.to_parquet(str(path))
    else:
        data.train_test_split(test_size=0.1, seed=0).save_to_disk(str(path))
    task = make_task("dataset", {"path": str(path), "prompt_template": "{q}=", "answer_field": "a", "demonstration_field": "sol"})
    assert task.size("train") + task.size("test") == 200 and task.size("test") >= 10
    problem = task.problem("train", 3)
    assert problem.prompt.endswith("=") and problem.demonstration is not None
    assert task.verify(problem, f"#### {problem.answer}").correct
    assert not task.verify(problem, "#### 3+5").correct


def test_the_dataset_task_takes_chat_messages(tmp_path: Path) -> None:
    rows = [{"messages": [{"role": "system", "content": "Add."}, {"role": "user", "content": f"{i}+1"},
                          {"role": "assistant", "content": f"#### {i + 1}"}], "answer": str(i + 1)} for i in range(100)]
    task = make_task("dataset", {"path": str(_write(tmp_path / "chat.jsonl", rows)), "messages_field": "messages",
                                 "test_fraction": 0.2})
    problem = task.problem("train", 0)
    assert problem.prompt.startswith("Add.\n\n") and problem.demonstration == (f"#### {problem.answer}",)


@pytest.mark.parametrize(
    ("verifier", "gold", "right", "wrong"),
    [
        ("numeric", "12", "so #### 12", "#### 13"),
        ("exact", "Paris", "The answer is Paris", "The answer is Rome"),
        ("math", "\\frac{1}{2}", "\\boxed{0.5}", "\\boxed{2}"),
        ("function_call", json.dumps([{"name": "add", "arguments": {"a": 1}}]), '[{"name": "add", "arguments": {"a": 1}}]',
         '[{"name": "add", "arguments": {"a": 2}}]'),
        ("code", ["assert f(2) == 4"], "```python\ndef f(x):\n    return 2 * x\n```", "def f(x):\n    return x\n"),
    ],
)
def test_verifiers_by_name(verifier: str, gold: object, right: str, wrong: str) -> None:
    assert judge_by_name(verifier, right, gold).correct  # type: ignore[arg-type]
    assert not judge_by_name(verifier, wrong, gold).correct  # type: ignore[arg-type]


def test_a_reward_function_named_in_the_recipe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "my_rewards.py").write_text(
        "def half(prompts, completions, a, **kwargs):\n    return [0.5 for _ in completions]\n"
        "def broken(prompts, completions, **kwargs):\n    raise RuntimeError('bug')\n")
    path = _write(tmp_path / "d.jsonl", ROWS)
    task = make_task("dataset", {"path": str(path), "prompt_field": "q", "answer_field": "a", "reward": "my_rewards:half",
                                 "reward_threshold": 0.5})
    problem = task.problem("train", 0)
    assert task.verify(problem, "anything") .score == 0.5 and task.verify(problem, "x").correct
    broken = make_task("dataset", {"path": str(path), "prompt_field": "q", "answer_field": "a", "reward": "my_rewards:broken"})
    assert broken.verify(problem, "x").reason == "verifier error"  # one answer alone: never raises


def test_bad_rows_are_refused_at_load_naming_the_row(tmp_path: Path) -> None:
    rows = [*ROWS[:50], {"q": "x", "a": "many"}, *ROWS[50:]]
    with pytest.raises(DataError, match=r"row 51: the answer 'many' is not a number"):
        make_task("dataset", {"path": str(_write(tmp_path / "d.jsonl", rows)), "prompt_field": "q", "answer_field": "a"})
    with pytest.raises(DataError, match="column 'question'"):
        make_task("dataset", {"path": str(_write(tmp_path / "e.jsonl", ROWS)), "prompt_field": "question", "answer_field": "a"})


# --------------------------------------------------------------------------------------- export
def test_export_writes_rollouts_and_pairs_readable_by_datasets(tmp_path: Path) -> None:
    from datasets import load_from_disk

    from selfimprove.config import DPORecipe, RLRecipe
    from selfimprove.methods.dpo import run_dpo
    from selfimprove.methods.rl import run_rl

    task = {"name": "countdown", "params": {"num_numbers": 2, "max_number": 9, "min_target": 1, "max_target": 20}}
    common = {"model": {"path": "tiny:small"}, "task": task, "steps": 2, "prompts_per_step": 2,
              "sampling": {"n": 4, "max_new_tokens": 6}, "eval": {"num_problems": 2, "max_new_tokens": 4}}
    run_rl(RLRecipe.model_validate({**common, "run_dir": str(tmp_path / "rl")}))
    run_dpo(DPORecipe.model_validate({**common, "run_dir": str(tmp_path / "rl" / "dpo"),
                                      "sampling": {"n": 4, "max_new_tokens": 6, "dynamic": False}}))
    # A DPO pair needs a right and a wrong answer: write one by hand if the untrained model made none.
    pairs = tmp_path / "rl" / "dpo" / "buffers" / "preference_pairs.jsonl"
    if not pairs.is_file():
        pairs.parent.mkdir(parents=True, exist_ok=True)
        pairs.write_text(json.dumps({"prompt": "3 4 -> 7:", "chosen": "3+4", "rejected": "3*4", "step": 0}) + "\n")
    assert main(["export", str(tmp_path / "rl"), "--to", str(tmp_path / "out")]) == 0
    index = {e["name"]: e for e in json.loads((tmp_path / "out" / "index.json").read_text())}
    rollouts = load_from_disk(index["rollouts"]["path"])
    assert {"prompt", "completion", "reward", "correct", "step"} <= set(rollouts.column_names)
    assert len(rollouts) == 2 * 2 * 4  # steps x prompts x samples
    from selfimprove.tasks import make_task

    prompts = {p.prompt for p in make_task("countdown", task["params"]).problems("train", 4)}
    assert set(rollouts["prompt"]) <= prompts and len(set(rollouts["prompt"])) == 4  # the prompt text, never empty
    preferences = load_from_disk(index["dpo__preference_pairs"]["path"])
    assert {"prompt", "chosen", "rejected"} <= set(preferences.column_names)
    assert main(["export", str(tmp_path / "rl"), "--to", str(tmp_path / "rl" / "inside")]) == 2


def test_export_of_alphallm_records_and_search_results(tmp_path: Path) -> None:
    from datasets import load_from_disk

    from selfimprove.cli.export import export_run

    run = tmp_path / "run"
    (run / "round1").mkdir(parents=True)
    (run / "round1" / "kept.jsonl").write_text(json.dumps({"prompt_ids": [1], "completion_ids": [2], "prompt": "p", "completion": "c"}) + "\n")
    (run / "round1" / "pairs.jsonl").write_text(json.dumps({"prompt": "p", "chosen": "a", "rejected": "b", "chosen_ids": [1]}) + "\n")
    (run / "results.jsonl").write_text(json.dumps({"prompt": "p", "answer": "x", "correct": True, "tokens": 5, "steps": ["x"]}) + "\n")
    (run / "buffers").mkdir()
    (run / "buffers" / "rollouts.jsonl").write_text(json.dumps({"prompt_ids": [1]}) + "\n")  # no text: skipped
    index = {e["name"]: e for e in export_run(run, tmp_path / "out")}
    assert load_from_disk(index["round1__kept"]["path"])[0] == {"prompt": "p", "completion": "c"}
    assert load_from_disk(index["round1__pairs"]["path"]).column_names == ["prompt", "chosen", "rejected"]
    assert load_from_disk(index["results"]["path"])[0]["reward"] == 1.0
    assert "lack text" in index["rollouts"]["skipped"]


# --------------------------------------------------------------------------------------- recipes
START = ["--set", "steps=1", "--set", "model.path=tiny:small", "--set", "model.chat=false", "--set", "eval.num_problems=2",
         "--set", "eval.max_new_tokens=4", "--set", "eval.batch_size=2", "--set", "schedule.eval_every=0"]
RL_START = ["--set", "prompts_per_step=2", "--set", "sampling.n=2", "--set", "sampling.max_new_tokens=4", "--set", "lora=null"]


@pytest.mark.parametrize(
    ("recipe", "command"),
    [("dataset-sft.yaml", "sft"), ("dataset-grpo.yaml", "train"), ("own-task-sft.yaml", "sft"), ("gsm8k-grpo.yaml", "train"),
     ("math-grpo.yaml", "train"), ("function-call-grpo.yaml", "train"), ("code-grpo.yaml", "train"), ("rgym-sft.yaml", "sft")],
)
def test_each_task_recipe_starts(recipe: str, command: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)  # recipes name files and modules relative to the repository
    extra = RL_START if command == "train" else []
    args = [command, f"recipes/{recipe}", "--set", f"run_dir={tmp_path / 'run'}", *START, *extra]
    assert main(args) == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["steps"] == 1
    config = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert config["task"]["name"] == yaml.safe_load((ROOT / "recipes" / recipe).read_text())["task"]["name"]


def test_records_decode_prompts_held_as_token_ids() -> None:
    """Regression: prompt segments carry token ids only, and every exported row had an empty `prompt`."""
    from selfimprove.methods.dpo import pair_record
    from selfimprove.methods.offline import dpo_record, sft_record
    from selfimprove.rollout.episode import Episode, Segment

    def episode(answer: str) -> Episode:
        return Episode([Segment("prompt", [3, 4]), Segment("completion", [9], trainable=True, reward=1.0, text=answer)],
                       problem_id="p", group=0)

    decode = {(3, 4): "3 4 -> 7:"}.__getitem__
    detokenize = lambda ids: decode(tuple(ids))  # noqa: E731
    good, bad = episode("3+4"), episode("3*4")
    assert good.record(0, detokenize)["prompt"] == "3 4 -> 7:" and good.record(0)["prompt"] == ""
    assert pair_record(good, bad, 0, detokenize) | {"step": 0} == {
        "step": 0, "problem_id": "p", "prompt": "3 4 -> 7:", "chosen": "3+4", "rejected": "3*4"}
    assert sft_record(good, detokenize)["prompt"] == "3 4 -> 7:"
    assert dpo_record(good, bad, detokenize)["prompt"] == "3 4 -> 7:"
