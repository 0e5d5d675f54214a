"""Final-answer extraction and numeric comparison, shared by the tasks whose gold answer is a number.

Model text is untrusted: everything here is bounded (texts are cut to `MAX_TEXT_CHARS` first), uses
plain regular expressions without nested quantifiers, never evaluates anything as code, and never
raises on model text. `extract_answer` finds the phrase a model offered as its final answer;
`parse_number` turns such a phrase into a float; `judge_numeric` combines both into a `Verdict`
with R^3's optional partial reward (SPECS §4: 1 correct, `partial` for a wrong number, 0 for none).
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass

from pydantic import Field

from selfimprove.tasks.problem import TaskConfig, Verdict

logger = logging.getLogger(__name__)

MAX_TEXT_CHARS = 10_000  # model text beyond this is ignored: answers live in the first few lines
MAX_PHRASE_CHARS = 1_000  # an answer phrase longer than this is cut before parsing
# Markers some tokenizers leave in decoded text; whatever follows one is not part of the answer.
END_MARKERS = ("<eos>", "<|end|>", "</s>", "<|endoftext|>", "<|im_end|>", "<|eot_id|>", "<pad>")

_DIGITS = "0123456789"
# A plain decimal: 1,234,567 (comma groups of three) or 1234, optional .5, or .5; optional exponent.
_DEC = r"(?:[0-9]{1,3}(?:,[0-9]{3})+|[0-9]+)(?:\.[0-9]+)?|\.[0-9]+"
_EXP = r"(?:[eE][-+]?[0-9]{1,3}(?![0-9]))?"
_SIGNED = rf"[-+]?(?:{_DEC})"
_FRAC_TEX = re.compile(rf"\\[dt]?frac\s*\{{\s*({_SIGNED})\s*\}}\s*\{{\s*({_SIGNED})\s*\}}")
_FRAC_TEX_SHORT = re.compile(r"\\[dt]?frac([0-9])([0-9])")
_SLASH = re.compile(rf"({_DEC})\s*/\s*({_DEC})")
_PLAIN = re.compile(rf"({_DEC}){_EXP}")
_SIGN = re.compile(r"([-+])\s?")
# One number token inside free text, for "the last number": a sign counts only where it cannot be
# a binary minus (not right after a digit, letter or closing bracket).
_TOKEN = re.compile(
    rf"(?:(?<![\w)\]}}.])-\s?)?\$?(?:\\[dt]?frac\{{[^{{}}]{{1,40}}\}}\{{[^{{}}]{{1,40}}\}}"
    rf"|(?:{_DEC})(?:/[0-9]+(?:\.[0-9]+)?)?{_EXP}%?)"
)
_ANSWER_IS = re.compile(r"\banswer\b\s*(?:is\b\s*:?|:|=)", re.IGNORECASE)
_BOXED = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")  # not a longer macro name (\boxedfoo)
_BOX_TOKEN = re.compile(r"[^\s$]+")  # the argument of `\boxed 5`
_LATEX_WORDS = re.compile(r"\\(?:text|textbf|textrm|mathrm|mathbf|displaystyle|left|right|quad|qquad)\b")


def cut_at_end_marker(text: str) -> str:
    """The text before the first end-of-sequence marker (tokenizers sometimes leave them in)."""
    cut = min((i for i in (text.find(m) for m in END_MARKERS) if i >= 0), default=len(text))
    return text[:cut]


# ---------------------------------------------------------------------------------------------
# Extraction.


def _rest_of_line(text: str, start: int) -> str:
    """The rest of the line from `start`; if that is empty, the next non-empty line."""
    line, _, after = text[start:].partition("\n")
    if line.strip():
        return line.strip()
    for nxt in after.split("\n", 20)[:20]:
        if nxt.strip():
            return nxt.strip()
    return ""


@dataclass(frozen=True)
class Boxed:
    """The content of a `\\boxed{...}` (or `\\fbox{...}`, `\\boxed 5`) of a text, or why there is none."""

    content: str | None
    problem: str | None = None


def _brace_pairs(text: str) -> dict[int, int]:
    """Matching `{` -> `}` positions in one linear pass; `\\{` and `\\}` are escaped characters, not
    braces (no recursion, so any depth is fine)."""
    stack: list[int] = []
    pairs: dict[int, int] = {}
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            i += 2
            continue
        if ch == "{":
            stack.append(i)
        elif ch == "}" and stack:
            pairs[stack.pop()] = i
        i += 1
    return pairs


def _box_at(text: str, start: int, macro: str, pairs: dict[int, int]) -> Boxed:
    """The box whose macro ends at `start`: `{...}` with balanced braces, or one token (`\\boxed 5`)."""
    i = start
    while i < len(text) and text[i] in " \t":
        i += 1
    if i >= len(text):
        return Boxed(None, f"empty {macro}")
    if text[i] != "{":
        token = _BOX_TOKEN.match(text, i)
        return Boxed(token.group(0)) if token and token.group(0) != "\\]" else Boxed(None, f"empty {macro}")
    end = pairs.get(i)
    if end is None:
        return Boxed(None, f"unclosed {macro}{{")
    content = text[i + 1 : end].strip()
    return Boxed(content) if content else Boxed(None, f"empty {macro}{{}}")


def last_boxed(text: str, *, strict: bool = True) -> Boxed:
    """The content of the last `\\boxed{...}` / `\\fbox{...}` / `\\boxed 5` in `text`.

    `strict` (MATH, `tasks/mathqa.py`): only the last box counts, so an unfinished or empty last box
    is no answer (the model did not finish it). Not strict (`extract_answer`): the last complete,
    non-empty box, passing over broken ones after it. Linear in the text's length either way.
    """
    starts = list(_BOXED.finditer(text))
    if not starts:
        return Boxed(None, "no \\boxed{} answer")
    pairs = _brace_pairs(text)
    found = Boxed(None, "no \\boxed{} answer")
    for m in reversed(starts):
        found = _box_at(text, m.end(), m.group(0), pairs)
        if strict or found.content is not None:
            return found
    return found


def _last_number(text: str) -> str | None:
    last = None
    for last in _TOKEN.finditer(text):
        pass
    return None if last is None else last.group(0)


def extract_answer(text: str, *, strict: bool = False) -> str | None:
    """The final answer a model gave, as text, or None when there is nothing that looks like one.

    Priority: `#### N` (GSM8K), the last `\\boxed{...}` (balanced braces, any depth), the last
    "the answer is X" / "answer: X", else the last number anywhere (lenient). `strict` takes only an
    explicitly marked final answer, the last `#### N` or `\\boxed{}` (stricter than the lenient chain, not
    lm-eval's exact regex). Only the first `MAX_TEXT_CHARS` characters before any end marker are read.
    """
    try:
        if not isinstance(text, str):
            return None
        text = cut_at_end_marker(text[:MAX_TEXT_CHARS])
        hashes = text.rfind("####")
        if hashes >= 0:
            rest = text[hashes + 4 :].lstrip("#")
            line = rest.partition("\n")[0].strip()
            if line:
                return line[:MAX_PHRASE_CHARS]
        boxed = last_boxed(text, strict=False).content
        if boxed:
            return boxed[:MAX_PHRASE_CHARS]
        if strict:
            return None
        said = None
        for said in _ANSWER_IS.finditer(text):
            pass
        if said is not None:
            phrase = _rest_of_line(text, said.end())
            if phrase:
                return phrase[:MAX_PHRASE_CHARS]
        return _last_number(text)
    except Exception:  # extraction must never stop a run; a bug here should be loud, not fatal
        logger.exception("answer extraction failed on %r", text[:200] if isinstance(text, str) else text)
        return None


# ---------------------------------------------------------------------------------------------
# Numbers.


def _clean(s: str) -> str:
    """Drop markup around a number: math delimiters, currency, bold, LaTeX spacing and wrappers."""
    s = s.replace("{,}", ",").replace("\\,", "").replace("\\!", "").replace("\\ ", " ")
    s = s.replace("\\%", "%").replace("\\$", "").replace("$", "")
    s = s.replace("\\(", "").replace("\\)", "").replace("\\[", "").replace("\\]", "")
    s = s.replace("\u2212", "-").replace("\u00a0", " ")
    s = _LATEX_WORDS.sub("", s)
    return s.strip().lstrip("=:({[*`'\" \t").strip()


def _to_float(s: str) -> float:
    return float(s.replace(",", ""))


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def parse_number(s: str) -> float | None:
    """The number a short answer phrase starts with, or None when it does not start with one.

    Accepts `1,234`, `$5`, `3.5`, `-2`, `.5`, `1e3`, `50%` (-> 50: GSM-style golds write percents as
    the bare number), `3/4`, `\\frac{3}{4}`, LaTeX/markdown wrappers, and trailing units or
    punctuation (`72 clips.`). Anything after the number that contains a digit makes the phrase
    ambiguous (`3 + 4`, `1.2.3`, `1,23`) and gives None. Never evaluates anything.
    """
    try:
        if not isinstance(s, str):
            return None
        s = _clean(s[:MAX_PHRASE_CHARS])
        sign = 1.0
        m = _SIGN.match(s)
        if m:
            sign = -1.0 if m.group(1) == "-" else 1.0
            s = s[m.end() :].lstrip("$")
        value: float | None = None
        end = 0
        if (m := _FRAC_TEX.match(s)) is not None or (m := _FRAC_TEX_SHORT.match(s)) is not None:
            den = _to_float(m.group(2))
            value = None if den == 0 else _to_float(m.group(1)) / den
            end = m.end()
        elif (m := _SLASH.match(s)) is not None:
            den = _to_float(m.group(2))
            value = None if den == 0 else _to_float(m.group(1)) / den
            end = m.end()
        elif (m := _PLAIN.match(s)) is not None:
            value = _to_float(m.group(0))
            end = m.end()
        if value is None:
            return None
        rest = s[end:]
        if any(ch in _DIGITS for ch in rest):
            return None
        return _finite(sign * value)
    except (ValueError, OverflowError, ZeroDivisionError):
        return None


def numbers_match(pred: float, gold: float, *, abs_tol: float = 1e-2, rel_tol: float = 0.0) -> bool:
    """|pred - gold| <= max(abs_tol, rel_tol * |gold|); never true for NaN or infinities."""
    if not (math.isfinite(pred) and math.isfinite(gold)):
        return False
    return abs(pred - gold) <= max(abs_tol, rel_tol * abs(gold))


def answer_value(phrase: str) -> float | None:
    """The number in an extracted answer phrase: the phrase itself, what follows its last `=`, or its
    first number token (answers usually start with the answer: `18 dollars, since 9*2=18`)."""
    value = parse_number(phrase)
    if value is None and "=" in phrase:
        value = parse_number(phrase.rpartition("=")[2])
    if value is None:
        token = _TOKEN.search(_clean(phrase[:MAX_PHRASE_CHARS]))
        value = None if token is None else parse_number(token.group(0))
    return value


def format_number(value: float) -> str:
    """Short human form for reasons: integers without `.0`, others with up to 6 significant digits."""
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.6g}"


def numeric_tolerance(gold: float, abs_tol: float | None, rel_tol: float) -> float:
    """How far an answer may be from `gold`: `abs_tol` when given (R^3's 1e-2); otherwise 0 for an
    integer gold (GSM8K's golds: 0.12 must not pass for 0.125, nor 0.495 for 0.5) and `rel_tol` x |gold|
    for a fractional one (float noise in `1/3` written as 0.333333)."""
    if abs_tol is not None:
        return abs_tol
    return 0.0 if float(gold).is_integer() else rel_tol * abs(gold)


_EXPRESSION = re.compile(r"^\s*[-+]?\$?\d[\d,.]*\s*[-+*/x\u00d7^]\s*[-+(]?\d")


def judge_numeric(text: str, gold: float, *, abs_tol: float | None = None, rel_tol: float = 1e-6,
                  partial: float = 0.0) -> Verdict:
    """Score free text against a numeric gold answer (SPECS §4 with `partial` = 0.2 for R^3).

    Correct -> 1; a number found but wrong -> `partial` (never counted as correct); nothing usable
    -> 0. An arithmetic expression where the number should be (`#### 3+5`) is refused as such. The
    tolerance is `numeric_tolerance`. The reason names what was found but never the gold answer, so it
    can be shown to a model.
    """
    if not isinstance(text, str):
        return Verdict.wrong("not text")
    answer = extract_answer(text)
    if answer is None:
        return Verdict.wrong("no answer found")
    shown = answer if len(answer) <= 40 else answer[:37] + "..."
    if parse_number(answer) is None and _EXPRESSION.match(answer):
        return Verdict.wrong(f"answer {shown!r} is an expression, not a number (write its value)")
    value = answer_value(answer)
    if value is None:
        return Verdict.wrong(f"answer {shown!r} is not a number")
    gold = float(gold)
    if numbers_match(value, gold, abs_tol=numeric_tolerance(gold, abs_tol, rel_tol)):
        return Verdict.right()
    return Verdict.wrong(f"wrong answer {format_number(value)}", score=partial)


class NumericConfig(TaskConfig):
    """Settings of tasks judged by a number: tolerance and R^3's optional partial reward."""

    abs_tol: float | None = Field(None, ge=0.0, allow_inf_nan=False)
    """Absolute tolerance; None: exact for integer golds, `rel_tol` for others (R^3 uses 0.01)."""
    rel_tol: float = Field(1e-6, ge=0.0, lt=1.0)
    """Relative tolerance for a non-integer gold when abs_tol is None."""
    partial_reward: float = Field(0.0, ge=0.0, le=1.0)
    """Score of a readable but wrong number (R^3: 0.2); it never counts as correct."""

    def tolerance_text(self) -> str:
        if self.abs_tol is not None:
            return f"absolute tolerance {self.abs_tol:g}"
        return f"exact for integer answers, relative tolerance {self.rel_tol:g} otherwise"
