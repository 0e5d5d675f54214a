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

A reward function (`reward: package.module:function`) has TRL's signature,
`fn(prompts: list[str], completions: list[str], **columns) -> list[float]`, each column of the
dataset (other than the prompt) passed as a list, so a function written for TRL's GRPOTrainer works
unchanged. It is called once per answer (lists of one). It can never crash a run: an exception, a
result that is not one finite number per completion, is logged and scored 0.
"""

from __future__ import annotations

import logging
import math
import re
from typing import Any, Callable, Literal, Mapping, Sequence

from selfimprove.tasks.answers import cut_at_end_marker, extract_answer, judge_numeric, parse_number
from selfimprove.tasks.problem import Verdict

logger = logging.getLogger(__name__)

VerifierName = Literal["numeric", "exact", "math", "function_call", "code"]
RewardFunction = Callable[..., Any]

__all__ = ["VerifierName", "call_reward", "check_gold", "judge_by_name"]


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


_SAFE_NAME = re.compile(r"[^A-Za-z0-9_.]")


def call_reward(fn: RewardFunction, prompt: str, completion: str, columns: Mapping[str, Any], *,
                threshold: float) -> Verdict:
    """One answer scored by a TRL-style reward function; never raises. The score is the function's
    number (any finite value); the answer counts as correct when it is >= `threshold`."""
    name = _SAFE_NAME.sub("", getattr(fn, "__name__", "reward"))
    try:
        result = fn(prompts=[prompt], completions=[completion], **{k: [v] for k, v in columns.items()})
    except Exception as err:
        logger.warning("reward function %s raised %s: %s (scored 0)", name, type(err).__name__, err)
        return Verdict.wrong(f"reward function error: {type(err).__name__}")
    values: Sequence[Any] | None = list(result) if isinstance(result, (list, tuple)) else None
    if values is None or len(values) != 1:
        logger.warning("reward function %s returned %r, not a list of one number per completion (scored 0)", name, result)
        return Verdict.wrong("reward function returned no score")
    value = values[0]
    try:
        score = float(value)
    except (TypeError, ValueError):
        score = math.nan
    if value is None or isinstance(value, bool) or not math.isfinite(score):
        logger.warning("reward function %s returned %r (scored 0)", name, value)
        return Verdict.wrong("reward function returned no finite score")
    correct = score >= threshold
    return Verdict(score=score, correct=correct, reason="correct" if correct else f"reward {score:g}")
