"""`dataset`: any table of prompts and answers as a task, without writing a class.

The data is a JSONL / JSON / CSV / parquet file or a `save_to_disk` folder (`tasks.files`), loaded
into a `datasets.Dataset`. Each row gives a prompt (`prompt_field`, or `prompt_template` filled from
the row's columns, or chat `messages`), a gold answer (`answer_field`) and optionally a worked
solution (`demonstration_field`, or the last assistant message) for SFT. Rows are checked once at load
(the columns exist, the gold suits the verifier), so a bad row fails before a run starts, naming it.

Splits: a saved `DatasetDict`'s train/test, a test file (`test_path`), a column (`split_field`), or
carved by a hash of the prompt (`test_fraction`); a carved test split smaller than
`min_test_problems` is refused with the parameters to change.

Scoring: a verifier by name (`verifier`: numeric, exact, math, function_call, code), or TRL-style
reward functions (`reward: package.module:function`, or a list with `reward_weights`), called once per
batch (`tasks.reward_calls`), see `tasks.rewards`.

Chat messages (`messages_field`: a list of `{role, content}`): a final assistant message is the
demonstration; the prompt is the last user message, with a system message's content before it
(earlier turns are written `role: content` lines above it). Prompts are text; with `model.chat: true`
the engine wraps them in the tokenizer's chat template as one user turn. A row whose messages hold tool
calls or tool results is a recorded conversation: the prompt is what comes before the assistant's
first turn, and SFT trains on every assistant turn with the tool results masked (`tools_field` gives
the tools' JSON schemas for the chat template).
"""

from __future__ import annotations

import string
from typing import Any, Mapping, Sequence

from pydantic import Field, model_validator

from selfimprove.chat import Message, check_messages
from selfimprove.errors import DataError
from selfimprove.tasks.base import SPLITS, Problem, Split, SplitPositions, Task, TaskConfig, Verdict, register_task
from selfimprove.tasks.files import read_tables
from selfimprove.tasks.rewards import VerifierName, check_gold, judge_by_name, reward_functions, verdicts_of

__all__ = ["DatasetConfig", "DatasetTask"]


class DatasetConfig(TaskConfig):
    """Where the rows are, which columns mean what, how to split, and how to score."""

    path: str = ""
    """The data: .jsonl / .json / .csv / .parquet, or a folder written by save_to_disk (required)."""
    test_path: str | None = None
    """A separate test file; otherwise a split column, a saved train/test split, or a hash split."""
    split_field: str | None = None
    """A column holding `train` or `test` per row."""
    prompt_field: str = "prompt"
    """The column with the prompt text (unused with prompt_template or messages_field)."""
    prompt_template: str | None = None
    """A template filled from the row's columns, e.g. `{question}\\nAnswer:`; None: the prompt column."""
    messages_field: str | None = None
    """A column of chat messages ([{role, content}]); a final assistant message is the demonstration."""
    answer_field: str = "answer"
    """The column with the gold answer (for code: the tests; for function_call: the expected calls)."""
    demonstration_field: str | None = None
    """A column with a worked solution for SFT (one step per line)."""
    tools_field: str | None = None
    """function_call: a column with the tools offered (names or JSON schemas)."""
    verifier: VerifierName | None = None
    """How to judge an answer against the gold: numeric (default), exact, math, function_call, code."""
    reward: str | list[str] | None = None
    """Reward function(s) `package.module:function` with TRL's signature, called once per batch; replace the verifier."""
    reward_weights: list[float] | None = None
    """With several reward functions: each one's weight in the sum (TRL's reward_weights); default 1 each."""
    reward_timeout: float = Field(60.0, gt=0.0)
    """Seconds one call of a reward function may take; a slower call fails (its completions get no value)."""
    reward_threshold: float = 1.0
    """With reward functions: a reward at or above this counts as a correct answer."""
    correct_by: str | None = None
    """With several reward functions: the one whose value decides correctness (e.g. accuracy, not format);
    None: the weighted sum."""
    abs_tol: float | None = Field(None, ge=0.0, allow_inf_nan=False)
    """numeric: absolute tolerance; None: exact for integers, rel_tol otherwise."""
    rel_tol: float = Field(1e-6, ge=0.0, lt=1.0)
    """numeric: relative tolerance for a non-integer gold."""
    min_test_problems: int = Field(10, ge=1)
    """A carved test split smaller than this is an error (raise test_fraction, or give test_path)."""

    @model_validator(mode="after")
    def _check(self) -> "DatasetConfig":
        if not self.path:
            raise ValueError("path is required: the data file or saved dataset folder")
        if self.reward is not None and self.verifier is not None:
            raise ValueError("give a verifier or a reward function, not both")
        for path in self.reward_paths:
            if ":" not in path:
                raise ValueError(f"reward must be package.module:function, got {path!r}")
        if self.reward is not None and not self.reward_paths:
            raise ValueError("reward: give at least one package.module:function")
        if self.correct_by is not None and not any(p.rsplit(":", 1)[-1] == self.correct_by for p in self.reward_paths):
            raise ValueError(f"correct_by {self.correct_by!r} names none of the reward functions {self.reward_paths}")
        if self.reward_weights is not None and len(self.reward_weights) != len(self.reward_paths):
            raise ValueError(f"reward_weights has {len(self.reward_weights)} weights for {len(self.reward_paths)} reward functions")
        if self.test_path is not None and self.split_field is not None:
            raise ValueError("set test_path or split_field, not both")
        if self.prompt_template is not None and self.messages_field is not None:
            raise ValueError("set prompt_template or messages_field, not both")
        if self.prompt_template is not None:
            names = [n for _, n, _, _ in string.Formatter().parse(self.prompt_template) if n is not None]
            if not names:
                raise ValueError("prompt_template must use at least one {column}")
        return self

    @property
    def reward_paths(self) -> list[str]:
        return [] if self.reward is None else [self.reward] if isinstance(self.reward, str) else list(self.reward)


def _is_conversation(messages: list[Any]) -> bool:
    """Messages that hold a tool call or a tool's result: a multi-turn demonstration, not one prompt."""
    return any(isinstance(m, Mapping) and (m.get("role") == "tool" or m.get("tool_calls")) for m in messages)


def _conversation(messages: list[Any], where: str) -> tuple[str, tuple[str, ...] | None, list[Message]]:
    """A recorded conversation with tool turns: the prompt is what comes before the first assistant
    message; the whole conversation is the demonstration (it must end with the assistant's answer)."""
    try:
        checked = check_messages([{**m, "content": m.get("content") or ""} for m in messages], "messages")
    except ValueError as err:
        raise DataError(f"{where}: {err}") from None
    first = next((i for i, m in enumerate(checked) if m["role"] == "assistant"), len(checked))
    head = [m for m in checked[:first]]
    if not head or head[-1]["role"] != "user":
        raise DataError(f"{where}: a conversation must start with a user turn before the assistant's first one")
    last = checked[-1]
    if last["role"] != "assistant" or last.get("tool_calls"):
        raise DataError(f"{where}: a conversation with tool turns must end with the assistant's answer (no tool call)")
    prompt, _ = _messages_prompt(head, where)
    return prompt, tuple(str(last.get("content", "")).splitlines()) or None, checked


def _messages_prompt(messages: Any, where: str) -> tuple[str, tuple[str, ...] | None]:
    if not isinstance(messages, list) or not messages or not all(isinstance(m, Mapping) and "content" in m for m in messages):
        raise DataError(f"{where}: messages must be a non-empty list of {{role, content}} objects")
    turns = [(str(m.get("role", "user")), str(m["content"])) for m in messages]
    demonstration = None
    if turns[-1][0] == "assistant":
        demonstration = tuple(turns[-1][1].splitlines()) or None
        turns = turns[:-1]
    if not turns or turns[-1][0] != "user":
        raise DataError(f"{where}: the messages must end with a user turn (or a user turn and the assistant's answer)")
    system = [c for r, c in turns if r == "system"]
    history = [f"{r}: {c}" for r, c in turns[:-1] if r != "system"]
    prompt = "\n\n".join(system + ["\n".join(history)] * bool(history) + [turns[-1][1]])
    return prompt, demonstration


@register_task("dataset")
class DatasetTask(Task):
    """Your own data: prompts and answers from a file or a saved dataset, a verifier by name or a reward function."""

    Config = DatasetConfig
    config: DatasetConfig

    def __init__(self, config: DatasetConfig | None = None) -> None:
        super().__init__(config)
        cfg = self.config
        self._reward = reward_functions(cfg) if cfg.reward is not None else None
        self._judge = None  # the reward function that decides correctness (`correct_by`), by its metric name
        if self._reward is not None and cfg.correct_by is not None:
            self._judge = next(s.name for s in self._reward.specs if s.path.rsplit(":", 1)[-1] == cfg.correct_by)
        self.verifier: VerifierName = cfg.verifier or "numeric"
        tables = read_tables(cfg.path)
        self.source = cfg.path
        if cfg.test_path is not None:
            test = read_tables(cfg.test_path, "task.params.test_path")
            tables = {"train": self._single(tables, cfg.path), "test": self._single(test, cfg.test_path)}
            self.source = f"{cfg.path} + {cfg.test_path}"
        rows: list[dict[str, Any]] = []
        labels: list[str | None] = []
        for label, table in tables.items():
            self._check_columns(table, cfg.path if label != "test" or cfg.test_path is None else cfg.test_path)
            for row in table:
                rows.append(dict(row))
                labels.append(label if label in SPLITS else None)
        self._rows = [self._parse(row, number) for number, row in enumerate(rows)]
        self._splits = self._split(labels)

    # ------------------------------------------------------------------ loading
    @staticmethod
    def _single(tables: Mapping[str, Any], path: str) -> Any:
        if "all" not in tables:
            raise DataError(f"{path}: holds train and test splits already; do not also give test_path")
        return tables["all"]

    def _check_columns(self, table: Any, path: str) -> None:
        cfg = self.config
        needed = [cfg.answer_field]
        if cfg.messages_field:
            needed.append(cfg.messages_field)
        elif cfg.prompt_template is None:
            needed.append(cfg.prompt_field)
        else:
            needed += [n for _, n, _, _ in string.Formatter().parse(cfg.prompt_template) if n]
        for optional in (cfg.demonstration_field, cfg.tools_field, cfg.split_field):
            if optional:
                needed.append(optional)
        missing = [c for c in dict.fromkeys(needed) if c not in table.column_names]
        if missing:
            raise DataError(
                f"{path}: no column {', '.join(map(repr, missing))} (columns: {', '.join(table.column_names)}); "
                f"set task.params.prompt_field / answer_field / ... to the right names"
            )

    def _parse(self, row: dict[str, Any], number: int) -> dict[str, Any]:
        cfg = self.config
        where = f"{self.source}: row {number + 1}"
        demonstration = None
        conversation = None
        messages = row[cfg.messages_field] if cfg.messages_field else None
        if isinstance(messages, list) and _is_conversation(messages):
            prompt, demonstration, conversation = _conversation(messages, where)
        elif cfg.messages_field:
            prompt, demonstration = _messages_prompt(messages, where)
        elif cfg.prompt_template is not None:
            prompt = cfg.prompt_template.format(**{k: "" if v is None else v for k, v in row.items()})
        else:
            prompt = "" if row[cfg.prompt_field] is None else str(row[cfg.prompt_field])
        if not prompt.strip():
            raise DataError(f"{where}: the prompt is empty")
        if self._reward is None:
            problem = check_gold(self.verifier, row[cfg.answer_field])
            if problem is not None:
                raise DataError(f"{where}: {problem}")
        if cfg.demonstration_field and row.get(cfg.demonstration_field):
            demonstration = tuple(str(row[cfg.demonstration_field]).splitlines())
        return {"prompt": prompt, "demonstration": demonstration, "row": row, "conversation": conversation}

    def _split(self, labels: list[str | None]) -> SplitPositions:
        cfg = self.config
        if cfg.split_field:
            labels = [str(r["row"][cfg.split_field]).strip().lower() for r in self._rows]
            odd = sorted({label for label in labels if label not in SPLITS})
            if odd:
                raise DataError(f"{self.source}: column {cfg.split_field!r} holds {odd[:3]}; use train or test")
        if any(label is not None for label in labels):
            positions = {s: [i for i, label in enumerate(labels) if label == s] for s in SPLITS}
            how = f"the {cfg.split_field!r} column" if cfg.split_field else "the data's own train/test split"
            return SplitPositions(self.name, self.source, positions, how)  # type: ignore[arg-type]
        splits = SplitPositions.by_hash(self.name, self.source, [r["prompt"] for r in self._rows], cfg.seed,
                                        cfg.test_fraction, key_name="prompt")
        test = splits.size("test")
        if cfg.test_fraction > 0 and test < cfg.min_test_problems:
            raise DataError(
                f"task.params.test_fraction: {self.source} has {len(self._rows)} rows, so test_fraction "
                f"{cfg.test_fraction} holds out only {test} test problem{'s' * (test != 1)} (min_test_problems "
                f"{cfg.min_test_problems}): raise test_fraction, give test_path, or lower min_test_problems"
            )
        return splits

    # ------------------------------------------------------------------ the task
    def size(self, split: Split) -> int:
        return self._splits.size(split)

    def make_problem(self, split: Split, index: int) -> Problem:
        position, offset = self._splits.locate(split, index)
        parsed = self._rows[position]
        answer = parsed["row"][self.config.answer_field]
        return Problem(
            id=f"dataset-{split}-{offset}",
            prompt=parsed["prompt"],
            answer=answer if isinstance(answer, str) else repr(answer),
            demonstration=parsed["demonstration"],
            metadata=self._metadata(position, parsed),
        )

    def _metadata(self, position: int, parsed: Mapping[str, Any]) -> dict[str, Any]:
        """The row's position; for a recorded conversation also its messages and the tools' schemas (SFT
        replays it: `rollout.demonstrations.recorded_episode`)."""
        if parsed["conversation"] is None:
            return {"position": position}
        tools = parsed["row"].get(self.config.tools_field) if self.config.tools_field else None
        schemas = [t for t in tools if isinstance(t, Mapping)] if isinstance(tools, list) else []
        return {"position": position, "messages": parsed["conversation"], "tool_schemas": schemas}

    def judge(self, problem: Problem, text: str) -> Verdict:
        cfg = self.config
        row = self._rows[int(problem.metadata["position"])]["row"]
        if self._reward is not None:
            return self._rewarded([problem], [text])[0]
        tools = row.get(cfg.tools_field) if cfg.tools_field else None
        return judge_by_name(self.verifier, text, row[cfg.answer_field], tools=tools, abs_tol=cfg.abs_tol, rel_tol=cfg.rel_tol)

    def has_numeric_answers(self) -> bool:
        return self._reward is None and self.verifier == "numeric"

    def verify_many(self, problems: Sequence[Problem], texts: Sequence[str]) -> list[Verdict]:
        """A batch of answers: the reward functions are called once for all of them (TRL's contract),
        a verifier by name judges them one by one."""
        if self._reward is None:
            return [self.verify(p, t) for p, t in zip(problems, texts, strict=True)]
        return self._rewarded(problems, texts)

    def _rewarded(self, problems: Sequence[Problem], texts: Sequence[str]) -> list[Verdict]:
        assert self._reward is not None
        rows = [self._rows[int(p.metadata["position"])]["row"] for p in problems]
        names = [k for k in rows[0] if k != self.config.prompt_field] if rows else []
        columns = {k: [row.get(k) for row in rows] for k in names}
        return verdicts_of(self._reward.score([p.prompt for p in problems], list(texts), columns), self.config.reward_threshold,
                           self._judge)

    def describe(self) -> str:
        paths = self.config.reward_paths
        scoring = f"the reward function{'s' * (len(paths) > 1)} {', '.join(paths)}" if paths else f"the {self.verifier} verifier"
        return (
            f"Your own data from {self.source}: {self.size('train')} train and {self.size('test')} test problems "
            f"(split by {self._splits.split_by}), scored by {scoring}."
        )
