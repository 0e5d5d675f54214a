"""Pre-run checks that read a sample of the task's problems through the model's tokenizer, so mistakes
that would surface only deep inside a run (an "unexpected" error after the run folder was written) are
one line before anything is written:

- a recipe that trains on demonstrations (SFT, the warm-up) on a task that gives none;
- a model with learned absolute positions (GPT-2, OPT, ...) whose context (config.json's `n_positions`,
  `max_position_embeddings`, ...) cannot hold a train prompt plus what a step generates (or the
  demonstration SFT trains on), or a held-out prompt plus what evaluation generates (a model with
  rotary or other relative positions runs past its context: a warning). Only a sample of each split is
  read (`SAMPLE` problems), and the first attempt of a multi-turn method;
and warnings, for what runs but is likely not what was meant:
- `prompts_per_step` larger than the train split (every problem drawn several times in one step);
- prompts the tokenizer maps to its unknown token (the model cannot read those characters).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from selfimprove.errors import DataError, ModelError
from selfimprove.policy.base import CONTEXT_KEYS
from selfimprove.policy.load import is_builtin
from selfimprove.tasks.base import Problem, Task

logger = logging.getLogger(__name__)

SAMPLE = 64  # problems read per split
# Architectures with learned absolute position embeddings: a position past the table fails. Every other
# (rotary, ALiBi, relative) runs past its configured context, less well: a warning, not an error.
LEARNED_POSITIONS = frozenset({"gpt2", "gpt_neo", "opt", "gpt_bigcode", "biogpt", "ctrl", "bert", "roberta", "distilbert",
                               "electra", "xlm-roberta", "imagegpt", "decision_transformer"})

__all__ = ["check_fit"]


def _model_folder(path: str) -> Path:
    """The folder whose config.json describes the model (a LoRA adapter's base)."""
    folder = Path(path).expanduser()
    if not (folder / "config.json").is_file() and (folder / "adapter_config.json").is_file():
        base = json.loads((folder / "adapter_config.json").read_text()).get("base_model_name_or_path") or ""
        folder = Path(base) if Path(base).is_absolute() or (Path(base) / "config.json").is_file() else folder / base
    return folder


def model_context(path: str) -> tuple[int | None, str, bool]:
    """The model's context in tokens, where that was read, and whether it is a hard limit: learned absolute
    positions (GPT-2's `n_positions`) fail past it; rotary ones (Llama, Qwen, ...) run past it, degraded.
    (None, "", False) when the config gives none."""
    if is_builtin(path):
        from selfimprove.policy.tiny import build_config, build_tokenizer

        return int(build_config(build_tokenizer()).max_position_embeddings), "the built-in tiny model", False
    config = json.loads((_model_folder(path) / "config.json").read_text())
    for source in (config, config.get("text_config") or {}):
        for key in CONTEXT_KEYS:
            if isinstance(source.get(key), int) and source[key] > 0:
                hard = source.get("model_type", config.get("model_type")) in LEARNED_POSITIONS
                return int(source[key]), f"config.json {key}", hard
    return None, "", False


def _tokenizer(path: str) -> Any:
    if is_builtin(path):
        from selfimprove.policy.tiny import build_tokenizer

        return build_tokenizer()
    from transformers import AutoTokenizer

    folder = Path(path).expanduser()
    return AutoTokenizer.from_pretrained(folder if (folder / "tokenizer_config.json").is_file() else _model_folder(path))


def _sample(task: Task, split: str, start: int = 0) -> list[Problem]:
    size = task.size(split)  # type: ignore[arg-type]
    count = SAMPLE if size is None else min(SAMPLE, max(0, size - start))
    return task.problems(split, count, start) if count else []  # type: ignore[arg-type]


def _check_demonstrations(task: Task, train: list[Problem]) -> None:
    """SFT draws every problem of its pool: each must have a demonstration (a missing one crashed a step)."""
    missing = sum(1 for p in train if not p.demonstration)
    if train and missing == len(train):
        raise DataError(f"task {task.name!r} gives no demonstrations (worked solutions) for SFT to train on"
                        f"{_demonstration_hint(task)}")
    if missing:
        raise DataError(f"task {task.name!r}: {missing} of the first {len(train)} train problems have no demonstration "
                        f"(worked solution) to train on{_demonstration_hint(task)}")


def _demonstration_hint(task: Task) -> str:
    fields = type(task.config).model_fields
    if "demonstration_field" in fields:
        return ": set task.params.demonstration_field to a column of solutions (or give chat messages ending with the answer)"
    return ": use a task with demonstrations, or a method that samples (train, star)"


def _env_tokens(recipe: Any) -> tuple[int, str]:
    """A conversation's model tokens: `env.max_tokens`, else max_turns x the tokens of one turn."""
    env = recipe.env
    sampling = getattr(recipe, "sampling", None) or getattr(recipe, "eval", None)
    return env.conversation_tokens(getattr(sampling, "max_new_tokens", 0)), _env_tokens_name(env, "max_new_tokens")


def _env_tokens_name(env: Any, per_turn: str) -> str:
    return "env.max_tokens" if env.max_tokens is not None else f"env.max_tokens (max_turns x {per_turn})"


def _check_env_demonstrations(task: Task, recipe: Any, train: list[Problem]) -> None:
    """SFT through an environment trains on its worked conversations: it must write some."""
    from selfimprove.rollout.conversation import env_run

    run = env_run(recipe.env, task, recipe.seed)
    assert run is not None
    if all(run.env.demonstration(p) is None for p in train[:8]):
        raise DataError(f"env: {run.env.describe()} writes no worked conversation for task {task.name!r}, so SFT has "
                        "nothing to train on (shipped: chain and countdown with calc, gsm8k with calc or python, "
                        "function_call; or a dataset of recorded conversations without env)")


def _train_tokens(task: Task, recipe: Any, train: list[Problem], tokenizer: Any) -> tuple[int, str]:
    """What a training step puts after a train prompt: the sampled tokens, or (SFT) the demonstration."""
    if getattr(recipe, "env", None) is not None:
        return _env_tokens(recipe)
    if getattr(type(recipe), "needs_demonstrations", False):
        shown = [len(tokenizer(task.target_text(p), add_special_tokens=False).input_ids) + 1 for p in train if p.demonstration]
        return max(shown, default=0), "the longest demonstration"
    sampling = getattr(recipe, "sampling", None)
    if sampling is not None and hasattr(sampling, "max_new_tokens"):
        return sampling.max_new_tokens, "sampling.max_new_tokens"
    return 0, ""


def _eval_tokens(recipe: Any) -> tuple[int, str]:
    evals = getattr(recipe, "eval", None)
    if getattr(recipe, "env", None) is not None and evals is not None:
        env = recipe.env
        return env.conversation_tokens(evals.max_new_tokens), _env_tokens_name(env, "eval.max_new_tokens")
    if evals is not None and hasattr(evals, "max_new_tokens"):
        return evals.max_new_tokens, "eval.max_new_tokens"
    return 0, ""


def check_fit(task: Task, recipe: Any) -> None:
    """The checks of the module docstring (errors first, then warnings)."""
    model = getattr(recipe, "model", None)
    train = _sample(task, "train")
    pool = getattr(recipe, "num_problems", 0)  # SFT trains on the first `num_problems` demonstrations
    if getattr(type(recipe), "needs_demonstrations", False) and pool:
        train = train[:pool]
    if getattr(type(recipe), "needs_demonstrations", False):
        if getattr(recipe, "env", None) is not None:
            _check_env_demonstrations(task, recipe, train)
        else:
            _check_demonstrations(task, train)
    per_step = getattr(recipe, "prompts_per_step", None)
    size = task.size("train")
    if per_step is not None and size is not None and per_step > size:
        logger.warning("prompts_per_step %d is larger than the train split of task %r (%d problems): each problem is "
                       "drawn about %.1f times per step", per_step, task.name, size, per_step / size)
    if model is None or not hasattr(model, "path"):
        return
    tokenizer = _tokenizer(model.path)
    tokenizer.model_max_length = 1 << 60  # this copy only measures: no "sequence too long" warnings
    from selfimprove.policy.hf import encode_prompt

    evals = getattr(recipe, "eval", None)
    held_out = _sample(task, evals.split, evals.start) if evals is not None and hasattr(evals, "split") else []
    encoded = {text: encode_prompt(tokenizer, text, chat=model.chat) for text in {p.prompt for p in train + held_out}}
    context, where, hard = model_context(model.path)
    for problems, (new, field) in ((train, _train_tokens(task, recipe, train, tokenizer)), (held_out, _eval_tokens(recipe))):
        longest = max((len(encoded[p.prompt]) for p in problems), default=0)
        if context is None or not new or longest + new <= context:
            continue
        room = context - longest
        fix = f"lower {field} to at most {room}" if room > 0 and field.endswith("tokens") else "shorten the prompts"
        if hard:
            raise ModelError(f"model.path: the model's context is {context} tokens ({where}) but prompts take up to "
                             f"{longest} tokens and {field} is {new}: {fix}, or use a model with a longer context")
        logger.warning("prompts take up to %d tokens and %s is %d, past the model's %d-token context (%s): its "
                       "positions run past it, less well than within", longest, field, new, context, where)
    unk = tokenizer.unk_token_id
    special = {tokenizer.eos_token_id, tokenizer.bos_token_id, tokenizer.pad_token_id}
    if unk is not None and unk not in special:  # an unk that doubles as eos (phi-2, CodeGen) marks nothing
        unreadable = [text for text, ids in encoded.items() if unk in ids]
        if unreadable:
            logger.warning("%d of %d sampled prompts (%.0f%%) hold characters the tokenizer maps to %s, e.g. %r: the "
                           "model cannot read them", len(unreadable), len(encoded), 100 * len(unreadable) / len(encoded),
                           tokenizer.unk_token, unreadable[0][:60])
