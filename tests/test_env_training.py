"""Environments through the whole library: SFT on worked conversations, GRPO on conversations (resumed
exactly), evaluation, best-of-N and votes over conversations, export in TRL's conversational format,
and the refusals of methods and searches that do not run environments."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from selfimprove.cli import main
from selfimprove.train.runlog import read_metrics

ROOT = Path(__file__).resolve().parent.parent
SFT = ROOT / "recipes" / "chain-tools-sft.yaml"
GRPO = ROOT / "recipes" / "chain-tools-grpo.yaml"
SMALL = ["task.params.num_steps=3", "env.max_turns=5", "env.max_tokens=60"]


def sets(*items: str) -> list[str]:
    return [arg for item in items for arg in ("--set", item)]


@pytest.fixture(scope="module")
def sft_model(tmp_path_factory: pytest.TempPathFactory, small_model_dir: Path) -> Path:
    run = tmp_path_factory.mktemp("envs") / "sft"
    argv = ["sft", str(SFT), *sets(f"run_dir={run}", f"model.path={small_model_dir}", "steps=40", "batch_size=16",
                                   "num_problems=64", "optim.lr=3.0e-3", "optim.warmup_steps=2", "eval.num_problems=8",
                                   *SMALL)]
    assert main(argv) == 0
    return run


def test_sft_trains_on_worked_conversations(sft_model: Path) -> None:
    summary = json.loads((sft_model / "summary.json").read_text())
    assert summary["steps"] == 40 and summary["eval_problems"] == 8
    records = [json.loads(line) for line in (sft_model / "eval_samples.jsonl").read_text().splitlines()]
    assert all(r["messages"][0]["role"] == "user" and "turns" in r for r in records)
    # forty steps teach the call layout: the greedy conversations call the calculator
    assert sum(r["tool_calls"] for r in records) >= len(records)
    assert [m for m in read_metrics(sft_model / "metrics.jsonl") if "train/loss" in m][-1]["train/loss"] < 1.5


def grpo(run: Path, model: Path, *extra: str) -> list[str]:
    return ["train", str(GRPO), *sets(f"run_dir={run}", f"model.path={model}", "steps=2", "max_sampled_tokens=null",
                                      "prompts_per_step=2", "sampling.n=3", "sampling.max_new_tokens=16",
                                      "eval.num_problems=4", "schedule.eval_every=0", "schedule.checkpoint_every=1", *SMALL,
                                      *extra)]


def test_grpo_on_conversations_resumes_exactly_and_exports_them(sft_model: Path, tmp_path: Path) -> None:
    from datasets import load_from_disk
    from helpers import Crash, crash_at

    from selfimprove.cli.export import export_run
    from selfimprove.config import RLRecipe, load_recipe
    from selfimprove.methods.rl import RL

    model = sft_model / "final"
    assert main(grpo(tmp_path / "straight", model)) == 0
    straight = [m for m in read_metrics(tmp_path / "straight" / "metrics.jsonl") if "train/loss" in m]
    assert {"train/turns", "train/tool_calls", "train/tool_errors", "train/cut_by_limit"} <= set(straight[0])
    assert straight[0]["train/sampled_tokens"] > 0
    # killed after step 1 and run again: the same episodes, losses and rewards
    recipe = load_recipe(RLRecipe, GRPO, [a for a in grpo(tmp_path / "resumed", model)[2:] if a != "--set"])
    with pytest.raises(Crash):
        RL(recipe).run(crash_at(1))
    assert main(grpo(tmp_path / "resumed", model)) == 0
    resumed = [m for m in read_metrics(tmp_path / "resumed" / "metrics.jsonl") if "train/loss" in m]
    for key in ("train/loss", "train/reward", "train/tool_calls", "train/sampled_tokens"):
        assert [m[key] for m in resumed] == [m[key] for m in straight], key
    # the trained conversations export as chat messages with tool calls, exactly as they were
    rows = [json.loads(line) for line in (tmp_path / "straight" / "buffers" / "rollouts.jsonl").read_text().splitlines()]
    assert len(rows) == 2 * 2 * 3 and all(r["messages"][0]["role"] == "user" for r in rows)
    index = {e["name"]: e for e in export_run(tmp_path / "straight", tmp_path / "out")}
    exported = load_from_disk(index["rollouts"]["path"])
    assert exported[0]["messages"] == rows[0]["messages"] and exported[0]["tools"] == rows[0]["tools"]
    assert exported[0]["tools"][0]["function"]["name"] == "calc"


def test_exported_conversations_train_with_trls_sft_trainer(sft_model: Path, tmp_path: Path) -> None:
    """TRL's SFT trainer reads the export's conversational rows as they are: `apply_chat_template(messages,
    tools=tools)` on each (a tool-calling template), then one training step."""
    from datasets import load_from_disk
    from test_dialogue import TOOL_TEMPLATE

    from selfimprove.cli.export import export_run
    from selfimprove.policy.tiny import build_tokenizer

    assert main(grpo(tmp_path / "run", sft_model / "final", "steps=1")) == 0
    index = {e["name"]: e for e in export_run(tmp_path / "run", tmp_path / "out")}
    tokenizer = build_tokenizer()
    tokenizer.chat_template = TOOL_TEMPLATE
    for row in load_from_disk(index["rollouts"]["path"]):
        text = tokenizer.apply_chat_template(row["messages"], tools=row["tools"], tokenize=False)
        assert text.startswith("<bos><|user|>tools: calc<|end|>")
        for message in row["messages"]:
            for call in message.get("tool_calls") or []:
                assert json.dumps({"name": call["function"]["name"], "arguments": call["function"]["arguments"]}) in text
    trl = pytest.importorskip("trl")
    from selfimprove.policy.hf import HFPolicy

    model = HFPolicy.load(sft_model / "final").model
    config = trl.SFTConfig(output_dir=str(tmp_path / "trl"), max_steps=1, per_device_train_batch_size=2, report_to=[],
                           use_cpu=True, save_strategy="no", disable_tqdm=True)
    trainer = trl.SFTTrainer(model=model, args=config, train_dataset=load_from_disk(index["rollouts"]["path"]).select_columns(
        ["messages", "tools"]), processing_class=tokenizer)
    assert trainer.train().training_loss > 0


def test_evaluation_and_search_run_whole_conversations(sft_model: Path, tmp_path: Path) -> None:
    model = sft_model / "final"
    assert main(["eval", str(ROOT / "recipes" / "countdown-eval.yaml"),
                 *sets(f"run_dir={tmp_path / 'eval'}", f"model.path={model}", "task.name=chain", "task.params=null", "task.params={num_steps: 3}",
                       "env={name: tools, tools: [calc], max_turns: 5, max_tokens: 60}", "eval.num_problems=4",
                       "eval.max_new_tokens=16", "eval.samples=3", "eval.pass_k=[1, 3]")]) == 0
    report = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert {"eval/accuracy", "eval/pass@3", "eval/maj@3", "eval/avg@3"} <= set(report)
    records = [json.loads(line) for line in (tmp_path / "eval" / "eval_samples.jsonl").read_text().splitlines()]
    assert len(records) == 4 + 4 * 3 and all("messages" in r for r in records)
    for search in ("majority_vote", "greedy"):
        run = tmp_path / search
        assert main(["search", str(ROOT / "recipes" / "search-countdown.yaml"),
                     *sets(f"run_dir={run}", f"model.path={model}", "task.name=chain", "task.params=null", "task.params={num_steps: 3}",
                           "env={name: tools, tools: [calc], max_turns: 5, max_tokens: 60}", f"search.name={search}",
                           "search.params=null", "search.params={n: 3, max_answer_tokens: 16}" if search != "greedy"
                           else "search.params={max_answer_tokens: 16}",
                           "search.sweep=null", "critics=null", "num_problems=3")]) == 0
        results = [json.loads(line) for line in (run / "results.jsonl").read_text().splitlines()]
        assert len(results) == 3 and all(r["messages"][0]["role"] == "user" for r in results)
        assert all(r["tokens"] > 0 and r["policy_calls"] >= 1 for r in results)
        if search == "majority_vote":
            assert all(r["candidates"] == 3 for r in results)


def test_methods_and_searches_that_make_their_own_episodes_refuse_an_environment(tmp_path: Path,
                                                                                  capsys: pytest.CaptureFixture) -> None:
    env = "env={name: tools, tools: [calc]}"
    assert main(["score", str(ROOT / "recipes" / "score-countdown.yaml"), *sets(f"run_dir={tmp_path / 's'}", env)]) == 2
    assert "env: score makes its own episodes and does not run environments (methods that do: rl, sft" in capsys.readouterr().err
    assert main(["search", str(ROOT / "recipes" / "search-countdown.yaml"),
                 *sets(f"run_dir={tmp_path / 'm'}", env, "search.name=mcts", "search.sweep=null", "search.params={}")]) == 2
    assert "env: search 'mcts' does not run conversations (searches that do: best_of_n, greedy" in capsys.readouterr().err
    assert main(["sft", str(SFT), *sets(f"run_dir={tmp_path / 'b'}", "env.tools=[examples.sums.my_rewards:final_number_reward]")]) == 2
    err = capsys.readouterr().err
    assert "env.tools[0]: tool final_number_reward" in err and len(err.strip().splitlines()) == 1
    assert main(["sft", str(SFT), *sets(f"run_dir={tmp_path / 'c'}", "task.name=function_call", "task.params=null")]) == 2
    assert "writes no worked conversation for task 'function_call'" in capsys.readouterr().err
    assert not (tmp_path / "b").exists() and not (tmp_path / "c").exists()


@pytest.mark.parametrize("extra", [
    ("loss.estimator=gae", "value.kind=head"),  # PPO: per-turn rewards paid where each turn ends
    ("loss.estimator=rloo_turns",),
    ("loss.estimator=rloo", "async.max_staleness=1"),
])
def test_other_estimators_and_asynchronous_rollouts_train_on_conversations(sft_model: Path, tmp_path: Path,
                                                                           extra: tuple[str, ...]) -> None:
    assert main(grpo(tmp_path / "run", sft_model / "final", "steps=1", *extra)) == 0
    [step] = [m for m in read_metrics(tmp_path / "run" / "metrics.jsonl") if "train/loss" in m]
    assert step["train/tool_calls"] > 0 and step["train/sampled_tokens"] > 0  # the SFT model calls its tool


def test_best_of_n_chooses_among_whole_conversations(sft_model: Path) -> None:
    from selfimprove.critics.verifier import VerifierCritic
    from selfimprove.envs.plugins import make_env
    from selfimprove.policy.hf import HFPolicy
    from selfimprove.rollout.conversation import EnvRun
    from selfimprove.search.best_of_n import BestOfNConfig, best_of_n_search
    from selfimprove.tasks import make_task

    task = make_task("chain", {"num_steps": 3})
    run = EnvRun(make_env("tools", task, tools=["calc"]), max_turns=5, max_tokens=60)
    problems = [task.problem("test", i) for i in range(3)]
    results = best_of_n_search(HFPolicy.load(sft_model / "final"), task, problems,
                               BestOfNConfig(n=4, max_answer_tokens=16), VerifierCritic(task), env=run)
    for result in results:
        assert result.candidates == 4 and result.state is not None and result.state.finished
        assert result.correct == result.state.info["verdict"].correct  # the environment's verdict, kept
        assert result.budget.critic_calls == 1 and result.budget.tokens > 0


@pytest.mark.parametrize("n, per_call, message", [(0, None, "n must be >= 1"), (4, 0, "samples_per_call must be >= 1")])
def test_conversation_candidates_refuse_counts_that_never_finish(n: int, per_call: int | None, message: str) -> None:
    """Called directly (not through a validated config), n or samples_per_call of 0 is an error, not a loop
    that asks for zero conversations forever."""
    from selfimprove.envs.plugins import make_env
    from selfimprove.policy.base import SamplingParams
    from selfimprove.rollout.budget import Budget
    from selfimprove.rollout.conversation import EnvRun
    from selfimprove.search.conversations import conversation_candidates
    from selfimprove.tasks import make_task

    task = make_task("chain", {"num_steps": 3})
    run = EnvRun(make_env("tools", task, tools=["calc"]), max_turns=2)
    with pytest.raises(ValueError, match=message):
        conversation_candidates(object(), run, [task.problem("test", 0)], n, SamplingParams(), [Budget()], 16,  # type: ignore[arg-type]
                                samples_per_call=per_call)


def test_sft_on_recorded_conversations_from_a_dataset(tmp_path: Path, small_model_dir: Path) -> None:
    calc = {"type": "function", "function": {"name": "calc", "description": "Arithmetic.", "parameters": {
        "type": "object", "properties": {"expression": {"type": "string", "description": "e.g. 1+2"}}, "required": ["expression"]}}}
    shout = {"type": "function", "function": {"name": "shout", "description": "Loud.", "parameters": {
        "type": "object", "properties": {"text": {"type": "string", "description": "words"}}, "required": ["text"]}}}
    rows = []
    for a in range(2, 30):
        messages = [{"role": "user", "content": f"{a}*3="},
                    {"role": "assistant", "content": "", "tool_calls": [
                        {"type": "function", "function": {"name": "calc", "arguments": {"expression": f"{a}*3"}}}]},
                    {"role": "tool", "name": "calc", "content": str(3 * a)},
                    {"role": "assistant", "content": str(3 * a)}]
        if a % 2:  # another tool with other argument names in the same file
            messages[1:1] = [{"role": "assistant", "content": "", "tool_calls": [
                {"type": "function", "function": {"name": "shout", "arguments": {"text": "go"}}}]},
                {"role": "tool", "name": "shout", "content": "GO"}]
        rows.append({"messages": messages, "answer": str(3 * a), "tools": [calc, shout]})
    data = tmp_path / "calls.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    from selfimprove.tasks import make_task

    task = make_task("dataset", {"path": str(data), "messages_field": "messages", "tools_field": "tools", "test_fraction": 0.3,
                                 "min_test_problems": 1})
    problem = next(task.problem("train", i) for i in range(10) if len(task.problem("train", i).metadata["messages"]) == 6)
    assert problem.metadata["messages"][1]["tool_calls"][0]["function"]["arguments"] == {"text": "go"}  # exactly as written
    assert problem.prompt == problem.metadata["messages"][0]["content"] and problem.metadata["tool_schemas"] == [calc, shout]
    argv = ["sft", str(ROOT / "recipes" / "dataset-sft.yaml"),
            *sets(f"run_dir={tmp_path / 'run'}", f"model.path={small_model_dir}", "task.params=null",
                  f"task.params={{path: {data}, messages_field: messages, tools_field: tools, test_fraction: 0.3, "
                  "min_test_problems: 1}", "steps=2", "batch_size=4", "eval.num_problems=2", "eval.max_new_tokens=4", "schedule.eval_problems=2")]
    assert main(argv) == 0
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"messages": rows[0]["messages"][:3], "answer": "6"}) + "\n")
    with pytest.raises(Exception, match="must end with the assistant's answer"):
        make_task("dataset", {"path": str(bad), "messages_field": "messages", "test_fraction": 0.0})


def test_an_environment_from_an_entry_point(monkeypatch: pytest.MonkeyPatch) -> None:
    from importlib.metadata import EntryPoint

    from selfimprove.envs import plugins
    from selfimprove.tasks import plugins as task_plugins

    point = EntryPoint("frugal", "examples.tools.my_env:FrugalTools", plugins.ENTRY_POINTS)
    monkeypatch.setattr(task_plugins, "entry_points", lambda group: [point] if group == plugins.ENTRY_POINTS else [])
    monkeypatch.chdir(ROOT)
    assert "frugal" in plugins.env_names()
    assert plugins.resolve_env("frugal").__name__ == "FrugalTools"
