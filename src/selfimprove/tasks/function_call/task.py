"""The `function_call` task: problems from the seeded generator or a local APIGen file, answers judged
by exact match of the calls (`judge.py`)."""

from __future__ import annotations

import copy
import random

from pydantic import Field, model_validator

from selfimprove.tasks.base import GeneratedTask, Problem, Split, SplitPositions, TaskConfig, Verdict, register_task
from selfimprove.tasks.function_call.apigen import ApigenItem, load_apigen
from selfimprove.tasks.function_call.judge import Call, canonical, calls_key, format_calls, judge_calls, problem_key, tool_names
from selfimprove.tasks.function_call.tools import TOOL_LIBRARY, TOOLS_BY_NAME, compact_prompt, full_prompt


class FunctionCallConfig(TaskConfig):
    """Function-calling settings. `path` None means the seeded generator."""

    path: str | None = None
    """A local APIGen JSON (a list) or JSONL file; None: the seeded generator."""
    num_tools: int = Field(2, ge=1, le=12)
    """Tools shown per generated problem (at least those needed)."""
    compact: bool = True
    """Short prompts for the character-level model (generated problems only)."""
    two_call_fraction: float = Field(0.2, ge=0.0, le=1.0)
    """Share of generated problems that need two calls."""

    @model_validator(mode="after")
    def _check_path(self) -> "FunctionCallConfig":
        if self.path is not None and not self.path.strip():
            raise ValueError("path must name a file (or be null for the generator)")
        return self


@register_task("function_call")
class FunctionCallTask(GeneratedTask):
    """Function calling (APIGen format): answer a request with the right tool calls, checked exactly."""

    Config = FunctionCallConfig
    config: FunctionCallConfig

    def __init__(self, config: FunctionCallConfig | None = None) -> None:
        super().__init__(config)
        self.items: list[ApigenItem] | None = None
        self._splits: SplitPositions | None = None
        cfg = self.config
        if cfg.path is not None:
            self.items = load_apigen(cfg.path)
            keys = [problem_key(item.query, item.answers) for item in self.items]
            self._splits = SplitPositions.by_hash(self.name, f"{cfg.path} ({len(self.items)} items)", keys, cfg.seed,
                                                  cfg.test_fraction)

    def size(self, split: Split) -> int | None:
        """How many distinct items a file-backed split has; None for the (unbounded) generator."""
        return None if self._splits is None else self._splits.size(split)

    def make_problem(self, split: Split, index: int) -> Problem:
        """The `index`-th problem of a split. File-backed splits wrap around (`index % size`)."""
        if self.items is not None:
            return self._file_problem(split, index)
        return super().make_problem(split, index)

    def draw(self, rng: random.Random, split: Split, index: int) -> Problem | None:
        query, calls = self._draw_request(rng)
        return self._generated_problem(split, index, rng, query, calls) if self.in_split(problem_key(query, calls), split) else None

    def _draw_request(self, rng: random.Random) -> tuple[str, list[Call]]:
        """One or two requests joined by '; ', with their expected calls."""
        first = rng.choice(TOOL_LIBRARY)
        query, args = first.draw(rng)
        calls = [{"name": first.name, "arguments": args}]
        if rng.random() < self.config.two_call_fraction:
            second = rng.choice(TOOL_LIBRARY)
            for _ in range(20):  # a second request that is not the first one again
                query2, args2 = second.draw(rng)
                if second.name != first.name or canonical(args2) != canonical(args):
                    query += "; " + query2
                    calls.append({"name": second.name, "arguments": args2})
                    break
        return query, calls

    def _generated_problem(
        self, split: Split, index: int, rng: random.Random, query: str, calls: list[Call]
    ) -> Problem:
        needed = list(dict.fromkeys(call["name"] for call in calls))
        others = [tool.name for tool in TOOL_LIBRARY if tool.name not in needed]
        shown_names = needed + rng.sample(others, max(0, self.config.num_tools - len(needed)))
        rng.shuffle(shown_names)
        shown = [TOOLS_BY_NAME[n] for n in shown_names]
        if self.config.compact:
            prompt = compact_prompt(shown, query)
        else:
            prompt = full_prompt([tool.schema() for tool in shown], query)
        answer = format_calls(calls)
        return Problem(
            id=f"function_call-{split}-{index}",
            prompt=prompt,
            answer=answer,
            demonstration=(answer,),
            metadata={"query": query, "calls": calls, "tools": shown_names, "source": "generated"},
        )

    def _file_problem(self, split: Split, index: int) -> Problem:
        assert self.items is not None and self._splits is not None
        position, _ = self._splits.locate(split, index)
        item = self.items[position]
        answer = format_calls(item.answers)
        return Problem(
            id=f"function_call-{split}-{index}",
            prompt=full_prompt(item.tools, item.query),
            answer=answer,
            demonstration=(answer,),
            metadata={
                "query": item.query,
                "calls": copy.deepcopy(list(item.answers)),
                "tools": tool_names(item.tools),
                "tool_schemas": copy.deepcopy(list(item.tools)),  # what a multi-turn environment offers
                "source": str(self.config.path),
                "item": position,
                "source_id": item.source_id,
            },
        )

    def judge(self, problem: Problem, text: str) -> Verdict:
        """Exact match of the calls; never evaluates model text as code."""
        return judge_calls(text, problem.metadata.get("calls"), problem.metadata.get("tools"))

    def answer_key(self, problem: Problem, text: str) -> str | None:
        """Votes go by the calls (`calls_key`), not by the last number the default would pick out of
        the JSON (two calls that differ only in a city would otherwise be one answer)."""
        return calls_key(text)

    def describe(self) -> str:
        cfg = self.config
        rules = (
            "The answer is a JSON list of calls [{\"name\": ..., \"arguments\": {...}}], checked by exact "
            "match of tool names and arguments (call order ignored, numbers by value, strings exactly)."
        )
        if self.items is not None:
            return (
                f"Function calling (APIGen format) from {cfg.path}: {len(self.items)} items "
                f"({self.size('train')} train / {self.size('test')} test), full JSON tool schemas in the "
                f"prompt. {rules}"
            )
        form = "a compact tools line" if cfg.compact else "full JSON tool schemas"
        return (
            f"Function calling (APIGen format), generated: {cfg.num_tools} tools shown per problem "
            f"(from a library of {len(TOOL_LIBRARY)}), {cfg.two_call_fraction:.0%} of requests need two "
            f"calls, prompts with {form}. {rules}"
        )
