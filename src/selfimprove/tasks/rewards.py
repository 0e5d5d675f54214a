"""How the `dataset` task scores an answer: a verifier by name, or a user's reward function.

Verifiers by name (the row's answer column is the gold):
- `numeric`: the final number (`#### N`, `\\boxed{}`, "the answer is", else the last number) against a
  numeric gold (`answers.judge_numeric`: exact for integers, relative tolerance otherwise);
- `exact`: the final answer phrase (or the whole answer when it gives none), whitespace collapsed,
  equal to the gold;
- `math`: math-verify equivalence of the last `\\boxed{}` (or the text's tail) with a LaTeX gold;
- `function_call`: the answer's JSON calls against the gold calls (exact match, `function_call.judge`);
- `code`: the answer's code run against the gold tests (a list of asserts, or a test module) in the
  sandbox.

Reward functions (`reward: package.module:function`, or a list of them with `reward_weights`) have
TRL's signature, `fn(prompts: list[str], completions: list[str], **columns) -> list[float | None]`,
each column of the dataset (other than the prompt) passed as a list, so a function written for TRL's
GRPOTrainer works unchanged. They are called once per batch (`tasks/reward_calls.py`: lists, tuples,
numpy and torch arrays; None for no value; `async def` functions concurrently; a time limit per call).
A failed call is logged and counted; a batch on which every call failed stops the run.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from selfimprove.errors import DataError
from selfimprove.tasks.answers import cut_at_end_marker, extract_answer, judge_numeric, parse_number
from selfimprove.tasks.problem import Verdict
from selfimprove.tasks.reward_calls import RewardBatch, RewardFunctions, RewardSpec

VerifierName = Literal["numeric", "exact", "math", "function_call", "code"]

__all__ = ["VerifierName", "check_gold", "judge_by_name", "reward_functions", "verdicts_of"]


def _norm(text: str) -> str:
    return " ".join(text.split())


def check_gold(verifier: VerifierName, gold: Any) -> str | None:
    """Why a gold answer cannot be used with `verifier` (checked for every row at load), or None."""
    if verifier == "numeric":
        if isinstance(gold, bool) or not (isinstance(gold, (int, float)) or parse_number(str(gold)) is not None):
            return f"the answer {str(gold)[:40]!r} is not a number (verifier numeric; use exact, or a reward function)"
        return None
    if verifier == "function_call":
        from selfimprove.tasks.function_call.judge import coerce_calls

        try:
            coerce_calls(gold, "answer")
        except Exception as err:
            return f"the answer is not a list of calls ({str(err).splitlines()[0]})"
        return None
    if verifier == "code":
        if isinstance(gold, str) and gold.strip():
            return None
        if isinstance(gold, (list, tuple)) and gold and all(isinstance(t, str) for t in gold):
            return None
        return "the answer column must hold the tests: a list of assert statements or a test module"
    if gold is None or (isinstance(gold, str) and not gold.strip()):
        return "the answer is empty"
    return None


def _gold_number(gold: Any) -> float:
    return float(gold) if isinstance(gold, (int, float)) else float(parse_number(str(gold)))  # type: ignore[arg-type]


def judge_by_name(verifier: VerifierName, text: str, gold: Any, *, tools: Any = None, abs_tol: float | None = None,
                  rel_tol: float = 1e-6, limits: Any = None) -> Verdict:
    """Judge `text` against `gold` with a named verifier (see the module docstring)."""
    if verifier == "numeric":
        return judge_numeric(text, _gold_number(gold), abs_tol=abs_tol, rel_tol=rel_tol)
    if verifier == "exact":
        phrase = extract_answer(text)
        said = _norm(phrase if phrase is not None else cut_at_end_marker(text))
        if not said:
            return Verdict.wrong("empty answer")
        return Verdict.right() if said == _norm(str(gold)) else Verdict.wrong("not the expected answer")
    if verifier == "math":
        from selfimprove.tasks.math_pool import math_equal

        equal, reason = math_equal(text, str(gold), require_boxed=False)
        return Verdict.right(reason) if equal else Verdict.wrong(reason)
    if verifier == "function_call":
        from selfimprove.tasks.function_call.judge import judge_calls

        return judge_calls(text, gold, tools)
    if verifier == "code":
        from selfimprove.sandbox import Limits, run_tests
        from selfimprove.tasks.code import extract_code

        code = extract_code(text)
        if not code.strip():
            return Verdict.wrong("empty answer")
        report = run_tests(code, gold if isinstance(gold, str) else list(gold), limits or Limits())
        return Verdict.right(report.reason) if report.passed else Verdict.wrong(report.reason)
    raise ValueError(f"unknown verifier {verifier!r}")


def reward_functions(config: Any) -> RewardFunctions:
    """The `dataset` task's reward functions from its config (`reward`, `reward_weights`,
    `reward_timeout`): imported by path, named by `__name__` (TRL's metric names) and numbered when two
    share a name."""
    from selfimprove.tasks.plugins import import_object

    paths = config.reward_paths
    weights = config.reward_weights or [1.0] * len(paths)
    specs, seen = [], set()
    for path, weight in zip(paths, weights):
        fn = import_object(path, "task.params.reward")
        if not callable(fn):
            raise DataError(f"task.params.reward: {path!r} is not a function")
        name = _SAFE_NAME.sub("", getattr(fn, "__name__", "") or path.rsplit(":", 1)[-1]) or "reward"
        base, k = name, 2
        while name in seen:
            name, k = f"{base}_{k}", k + 1
        seen.add(name)
        specs.append(RewardSpec(path, name, fn, float(weight)))
    return RewardFunctions(specs, timeout=config.reward_timeout)


def verdicts_of(batch: RewardBatch, threshold: float, correct_by: str | None = None) -> list[Verdict]:
    """A batch's rewards as verdicts: the combined reward is the score; correct when it (or the value of
    the function named `correct_by`) is at or above `threshold`; `info` holds each function's value and
    whether one of them failed for the completion."""
    out = []
    judge = correct_by
    for i, total in enumerate(batch.totals):
        parts = batch.parts(i)
        failed = sorted(batch.failed)
        decisive = total if judge is None else parts[judge]
        correct = decisive is not None and decisive >= threshold
        reason = "correct" if correct else f"reward {total:g}"
        if failed:
            reason += f" ({', '.join(failed)} failed)"
        out.append(Verdict(score=total, correct=correct, reason=reason, info={"rewards": parts, "reward_failed": bool(failed)}))
    return out


_SAFE_NAME = re.compile(r"[^A-Za-z0-9_.]")
