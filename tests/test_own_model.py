"""Your own model folder, no code change: a GPT-2 architecture with a byte-level BPE tokenizer (vocab.json +
merges.txt, no pad token) trains with SFT and with LoRA on PEFT's default target modules (`c_attn`)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import yaml

from helpers import write_gpt2

from selfimprove.cli import main


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from transformers import AutoTokenizer

    folder = write_gpt2(tmp_path_factory.mktemp("gpt2") / "model")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert len(tokenizer) > 100 and tokenizer.pad_token is None  # a real BPE vocabulary, no pad token (GPT-2's case)
    return folder


def _recipe(tmp_path: Path, model: Path, **extra: object) -> Path:
    recipe = {"run_dir": str(tmp_path / "run"), "model": {"path": str(model)}, "steps": 2, "batch_size": 4,
              "task": {"name": "countdown", "params": {"num_numbers": 2, "max_number": 9, "min_target": 1, "max_target": 18}},
              "eval": {"num_problems": 2, "max_new_tokens": 4}, **extra}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def test_a_gpt2_bpe_model_runs_sft(gpt2_dir: Path, tmp_path: Path) -> None:
    assert main(["sft", str(_recipe(tmp_path, gpt2_dir))]) == 0
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["steps"] == 2


def test_lora_defaults_to_pefts_targets_for_the_architecture(gpt2_dir: Path, tmp_path: Path) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(["sft", str(_recipe(tmp_path, gpt2_dir, lora={"r": 4, "alpha": 8}))]) == 0
    assert not [w for w in caught if "fan_in_fan_out" in str(w.message)]  # GPT-2's Conv1D layers are declared as such
    adapter = json.loads((tmp_path / "run" / "final" / "adapter_config.json").read_text())
    assert adapter["fan_in_fan_out"] is True
    assert adapter["target_modules"] == ["c_attn"] or set(adapter["target_modules"]) == {"c_attn"}


def test_the_guides_own_model_command_trains_with_the_chat_template(small_model_dir: Path, tmp_path: Path) -> None:
    """`selfimprove train recipes/countdown-grpo.yaml --set model.path=FOLDER --set model.chat=true` (the
    guide's example), on a local folder whose tokenizer has a chat template."""
    root = Path(__file__).resolve().parent.parent
    small = ["steps=1", "prompts_per_step=2", "sampling.n=2", "sampling.max_new_tokens=4", "eval.num_problems=2",
             "eval.max_new_tokens=4", "schedule.eval_every=0", f"run_dir={tmp_path / 'run'}"]
    argv = ["train", str(root / "recipes" / "countdown-grpo.yaml"), "--set", f"model.path={small_model_dir}", "--set", "model.chat=true"]
    assert main(argv + [a for item in small for a in ("--set", item)]) == 0
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["steps"] == 1
