"""reasoning-gym adapter: any procedural reasoning-gym dataset as a task, with train and test disjoint.

Problems come from one deterministic stream of dataset entries per (dataset, settings, seed): entry
`j` is item `j % CHUNK` of a dataset created with seed `base + CHUNK * (j // CHUNK)`, so the stream is
endless without building a huge dataset. Each entry belongs to a split by a hash of its question
(`split_of`), so train and test never share a question, and every entry is used by exactly one split.
The positions of a split are found once and cached, which gives random access.

Prompts: the dataset's question, or one of our short templates for the character-level model
(`SHORT_TEMPLATES`, e.g. `{expression} =` for chain_sum), or any `prompt_template` naming `question`
and scalar metadata fields. Datasets whose answers are only checkable by evaluating an expression
(countdown, puzzle24) are refused: use our own `countdown` task, whose checker is exact and safe.

Verification never evaluates model text:
- numeric gold answers (a plain decimal) use `judge_numeric` (tolerance and partial reward from
  `NumericConfig`);
- other answers match exactly after normalising whitespace (and case, if `case_sensitive` is off),
  against the `<answer>...</answer>` content if present, else the whole answer, the "answer is"
  phrase or the last line;
- reasoning-gym's own `score_answer` is consulted only for datasets in `SCORER_ALLOW_LIST`, whose
  implementations we read in reasoning-gym 0.1.25 (`VERIFIED_VERSIONS`) and which only use string
  operations, regular expressions, `int`, `float` or `Decimal` -- never `eval`, `ast`, `sympy`'s
  `parse_expr` (eval-based: countdown, puzzle24, polynomial_*, *_integration) or json of a program.
  On any other version the allow-list is ignored. It can only widen acceptance (e.g. word_sorting's
  flexible comma spacing), and only a score of exactly 1.0 counts: reasoning-gym's partial credit
  (0.01, 0.05, 0.5 ...) is never a correct answer and scores 0 here.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import string
from functools import lru_cache
from importlib import metadata as importlib_metadata
from typing import Any, Callable, Mapping

from pydantic import Field, field_validator, model_validator

from selfimprove.tasks.answers import (
    MAX_TEXT_CHARS,
    NumericConfig,
    cut_at_end_marker,
    extract_answer,
    judge_numeric,
)
from selfimprove.tasks.base import SPLITS, Problem, Split, Task, Verdict, calculator_score, register_task, split_of
from selfimprove.registry import full_checks

logger = logging.getLogger(__name__)

CHUNK = 1000  # entries per underlying reasoning-gym dataset object
MAX_SCAN_GAP = 20_000  # stream entries scanned without finding one of the split before giving up
MAX_SCORER_CHARS = 2_000  # candidate answers longer than this never reach reasoning-gym's scorer

# Our short prompts for the character-level model (fields come from the entry's metadata).
SHORT_TEMPLATES: Mapping[str, str] = {
    "chain_sum": "{expression} =",
    "basic_arithmetic": "{expression} =",
    "products": "{expression} =",
    "decimal_chain_sum": "{expression} =",
}
# Datasets whose answers are expressions with many valid forms, checkable only by evaluation.
USE_OWN_TASK: Mapping[str, str] = {"countdown": "countdown", "puzzle24": "countdown"}
# dataset -> qualified name of the `score_answer` we read (see the module docstring).
SCORER_ALLOW_LIST: Mapping[str, str] = {
    "chain_sum": "ChainSumDataset.score_answer",  # utils.compute_decimal_reward: Decimal, `in`
    "products": "ProductsDataset.score_answer",  # the same
    "decimal_chain_sum": "DecimalChainSumDataset.score_answer",  # Decimal equality
    "decimal_arithmetic": "DecimalArithmeticDataset.score_answer",  # Decimal within 10^-places
    "spell_backward": "SpellBackwardDataset.score_answer",  # lower-case string comparison
    "letter_jumble": "LetterJumbleDataset.score_answer",  # strip/lower, word-by-word comparison
    "word_sorting": "WordSortingDataset.score_answer",  # re.split on commas, list equality
    "prime_factorization": "PrimeFactorizationDataset.score_answer",  # split on "x", int(), sort
}
VERIFIED_VERSIONS = frozenset({"0.1.25"})

_NUMERIC_GOLD = re.compile(r"-?(?:[0-9]+(?:\.[0-9]+)?|\.[0-9]+)")
_ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.DOTALL | re.IGNORECASE)
_WS = re.compile(r"\s+")


# ---------------------------------------------------------------------------------------------
# reasoning-gym access (imported lazily: the package takes ~1.5 s to import).


def _datasets() -> Mapping[str, tuple[type, type]]:
    import reasoning_gym  # noqa: F401  (registers the datasets)
    from reasoning_gym.factory import DATASETS

    return DATASETS


def check_dataset(name: str, dataset_config: Mapping[str, Any]) -> None:
    """Raise ValueError unless `name` is a usable dataset and `dataset_config` its valid settings."""
    if name in USE_OWN_TASK:
        raise ValueError(
            f"reasoning-gym's {name!r} answers are expressions checkable only by evaluating them: use "
            f"the {USE_OWN_TASK[name]!r} task instead (an exact, safe checker)"
        )
    datasets = _datasets()
    if name not in datasets:
        raise ValueError(f"unknown reasoning-gym dataset {name!r} (known: {', '.join(sorted(datasets))})")
    for reserved in ("seed", "size"):
        if reserved in dataset_config:
            raise ValueError(f"dataset_config must not set {reserved!r}: the task's own seed and stream set it")
    _, config_cls = datasets[name]
    try:
        rg_config = config_cls(**dict(dataset_config))
        if hasattr(rg_config, "validate"):
            rg_config.validate()
    except (TypeError, ValueError, AssertionError) as error:
        raise ValueError(f"bad dataset_config for {name!r}: {error or type(error).__name__}") from None


def _config_key(dataset_config: Mapping[str, Any]) -> str:
    return json.dumps(dict(dataset_config), sort_keys=True, default=str)


@lru_cache(maxsize=32)
def _chunk(name: str, config_key: str, seed: int) -> Any:
    """One reasoning-gym dataset object of `CHUNK` entries (cached: some build tables on creation)."""
    import reasoning_gym

    return reasoning_gym.create_dataset(name, seed=seed, size=CHUNK, **json.loads(config_key))


@lru_cache(maxsize=1)
def _rg_version() -> str:
    try:
        return importlib_metadata.version("reasoning-gym")
    except importlib_metadata.PackageNotFoundError:
        return "unknown"


def allowed_scorer(name: str, dataset: Any) -> Callable[[str, dict], float] | None:
    """reasoning-gym's `score_answer` for an allow-listed dataset on a verified version, else None."""
    expected = SCORER_ALLOW_LIST.get(name)
    if expected is None:
        return None
    if _rg_version() not in VERIFIED_VERSIONS:
        _warn_unverified(_rg_version())
        return None
    method = getattr(type(dataset), "score_answer", None)
    if getattr(method, "__qualname__", None) != expected:
        return None
    return dataset.score_answer


@lru_cache(maxsize=4)
def _warn_unverified(version: str) -> None:
    logger.warning(
        "reasoning-gym %s is not a version whose scorers were checked (%s): using our own matching only",
        version,
        ", ".join(sorted(VERIFIED_VERSIONS)),
    )


def _score(scorer: Callable[[str, dict], float], answer: str, entry: dict[str, Any]) -> float:
    """An allow-listed scorer's score; its exceptions on garbage (e.g. `int("x")`) just mean 0."""
    try:
        return float(scorer(answer, entry))
    except Exception:
        return 0.0


class EntryStream:
    """An endless deterministic stream of one dataset's entries, split by a hash of a key.

    `locate(split, index)` gives the stream position of a split's `index`-th entry; positions are
    found by one forward scan shared by both splits and cached, so random access is cheap after
    the first visit.
    """

    def __init__(
        self,
        name: str,
        dataset_config: Mapping[str, Any],
        seed: int,
        test_fraction: float,
        key: Callable[[dict[str, Any]], str],
    ) -> None:
        self.name = name
        self._config_key = _config_key(dataset_config)
        self._seed = seed
        self._test_fraction = test_fraction
        self._key = key
        digest = hashlib.sha256(f"rgym:{name}:{self._config_key}:{seed}".encode()).digest()
        self._base = int.from_bytes(digest[:4], "big") % 2**31
        self._scanned = 0
        self._positions: dict[Split, list[int]] = {split: [] for split in SPLITS}

    def dataset(self, position: int) -> Any:
        return _chunk(self.name, self._config_key, self._base + CHUNK * (position // CHUNK))

    def entry(self, position: int) -> dict[str, Any]:
        return self.dataset(position)[position % CHUNK]

    def locate(self, split: Split, index: int) -> int:
        """The stream position of entry `index` of `split` (the task has checked split and index)."""
        if (split == "test" and self._test_fraction == 0.0) or (split == "train" and self._test_fraction == 1.0):
            raise ValueError(f"the {split} split is empty with test_fraction={self._test_fraction}")
        positions = self._positions[split]
        last_hit = self._scanned
        while len(positions) <= index:
            if self._scanned - last_hit > MAX_SCAN_GAP:
                raise ValueError(f"{self.name}: no {split} entry in {MAX_SCAN_GAP} stream entries")
            position = self._scanned
            found = split_of(self._key(self.entry(position)), self._seed, self._test_fraction)
            self._positions[found].append(position)
            self._scanned += 1
            if found == split:
                last_hit = self._scanned
        return positions[index]


# ---------------------------------------------------------------------------------------------
# Prompts and answers.


def template_fields(template: str) -> list[str]:
    """The field names a prompt template uses; ValueError for attribute/index access or bad syntax."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as error:
        raise ValueError(f"bad prompt_template {template!r}: {error}") from None
    fields = [name for _, name, _, _ in parsed if name is not None]
    for name in fields:
        if not name.isidentifier():
            raise ValueError(f"prompt_template fields must be plain names like {{question}}, got {{{name}}}")
    return fields


def render(template: str, entry: Mapping[str, Any], question: str) -> str:
    """Fill a template from `question` and the entry's scalar metadata."""
    values: dict[str, Any] = {
        k: v for k, v in dict(entry.get("metadata") or {}).items() if isinstance(v, (str, int, float))
    }
    values["question"] = question
    missing = [name for name in template_fields(template) if name not in values]
    if missing:
        raise ValueError(
            f"prompt_template field(s) {', '.join(missing)} not available (have: {', '.join(sorted(values))})"
        )
    return template.format(**values)


def is_numeric_answer(answer: str) -> bool:
    return _NUMERIC_GOLD.fullmatch(answer.strip()) is not None


def normalise(text: str, case_sensitive: bool = True) -> str:
    """Whitespace runs -> one space, outer whitespace and one trailing period dropped."""
    text = _WS.sub(" ", text).strip()
    if text.endswith("."):
        text = text[:-1].rstrip()
    return text if case_sensitive else text.casefold()


def candidates(text: str) -> list[str]:
    """What the model may have meant as its answer, most explicit first."""
    tags = _ANSWER_TAG.findall(text)
    if tags:
        return [tags[-1].strip()]
    out = [text.strip()]
    said = extract_answer(text)
    if said is not None:
        out.append(said)
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if lines:
        out.append(lines[-1])
    return out


# ---------------------------------------------------------------------------------------------
# The task.


class ReasoningGymConfig(NumericConfig):
    """Which reasoning-gym dataset, its settings, the prompt, and how strictly strings match."""

    dataset: str = "chain_sum"
    """The reasoning-gym dataset name."""
    dataset_config: dict[str, Any] = Field(default_factory=dict)
    """Settings passed to reasoning-gym's dataset."""
    prompt_template: str | None = None
    """Prompt template with {question}; None: the question itself."""
    case_sensitive: bool = True
    """Whether string answers must match in case."""
    use_dataset_scorer: bool = True
    """Use the dataset's own scorer where it is safe (never for countdown)."""

    @field_validator("prompt_template")
    @classmethod
    def _check_template(cls, template: str | None) -> str | None:
        if template is not None:
            template_fields(template)
        return template

    @model_validator(mode="after")
    def _check_dataset(self) -> "ReasoningGymConfig":
        if full_checks():  # reasoning-gym takes ~1.5 s to import: the CLI's first, light pass skips it
            check_dataset(self.dataset, self.dataset_config)
        return self


@register_task("reasoning_gym")
class ReasoningGymTask(Task):
    """reasoning-gym: any procedural reasoning-gym dataset, with our short prompts and safe checking."""

    Config = ReasoningGymConfig
    config: ReasoningGymConfig

    def __init__(self, config: ReasoningGymConfig | None = None) -> None:
        super().__init__(config)
        cfg = self.config
        self._stream = EntryStream(
            cfg.dataset, cfg.dataset_config, cfg.seed, cfg.test_fraction, key=lambda e: str(e["question"])
        )

    @property
    def template(self) -> str:
        cfg = self.config
        if cfg.prompt_template is not None:
            return cfg.prompt_template
        return SHORT_TEMPLATES.get(cfg.dataset, "{question}")

    def make_problem(self, split: Split, index: int) -> Problem:
        position = self._stream.locate(split, index)
        entry = self._stream.entry(position)
        question, answer = str(entry["question"]), str(entry["answer"])
        return Problem(
            id=f"rg-{self.config.dataset}-{split}-{index}",
            prompt=render(self.template, entry, question),
            answer=answer,
            demonstration=tuple(answer.split("\n")) if answer.strip() else None,
            metadata={"dataset": self.config.dataset, "position": position, "entry": entry},
        )

    def judge(self, problem: Problem, text: str) -> Verdict:
        """Numeric answers by value, others by normalised exact match (or an allow-listed scorer)."""
        text = cut_at_end_marker(text[:MAX_TEXT_CHARS])
        cfg = self.config
        options = candidates(text)
        if not any(options):
            return Verdict.wrong("empty answer")
        if is_numeric_answer(problem.answer):
            gold_value = float(problem.answer)
            return judge_numeric(options[0], gold_value, abs_tol=cfg.abs_tol, rel_tol=cfg.rel_tol, partial=cfg.partial_reward)
        gold = normalise(problem.answer, cfg.case_sensitive)
        if any(normalise(c, cfg.case_sensitive) == gold for c in options):
            return Verdict.right()
        entry = problem.metadata.get("entry")
        position = problem.metadata.get("position")
        if cfg.use_dataset_scorer and isinstance(entry, dict) and isinstance(position, int):
            scorer = allowed_scorer(cfg.dataset, self._stream.dataset(position))
            if scorer is not None:
                for c in options:
                    if c and len(c) <= MAX_SCORER_CHARS and _score(scorer, c, entry) == 1.0:
                        return Verdict.right("correct (dataset scorer)")
        return Verdict.wrong("answer does not match")

    def tool_score(self, prompt: str, text: str, finished: bool) -> float | None:
        """A calculator on the equations the text writes (0 if one is wrong, else undecided): it checks
        the arithmetic, not the reasoning (a partial gold-free check)."""
        return calculator_score(text)

    def describe(self) -> str:
        cfg = self.config
        settings = f" with {cfg.dataset_config}" if cfg.dataset_config else ""
        allowed = cfg.dataset in SCORER_ALLOW_LIST and cfg.use_dataset_scorer
        scorer = " (or its own allow-listed scorer)" if allowed else ""
        return (
            f"reasoning-gym {cfg.dataset!r}{settings}: procedurally generated problems, train and test "
            f"split by a hash of the question; prompt template {self.template!r}. Numeric answers are "
            f"judged by value ({cfg.tolerance_text()}), others by exact normalised match{scorer}; model "
            f"text is never evaluated."
        )
