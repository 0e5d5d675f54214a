"""LoRA: only the adapter trains, the adapter-off model is the KL reference, save/load/merge and exact resume."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Iterator

import pytest
from helpers import Crash, crash_at
import torch
from safetensors.torch import load_file

from selfimprove.algos.advantages import grpo
from selfimprove.cli import main
from selfimprove.config import LoraConfig, OptimConfig, RLRecipe, SFTRecipe
from selfimprove.policy.hf import HFPolicy
from selfimprove.policy.lora import apply_lora, is_lora, load_adapter, save_policy
from selfimprove.rollout.episode import Episode, Segment, TokenBatch, collate
from selfimprove.train.checkpoint import latest_checkpoint
from selfimprove.train.learner import Learner
from selfimprove.methods.rl import run_rl
from selfimprove.train.objectives import sft_objective
from selfimprove.train.runlog import read_metrics
from selfimprove.methods.sft import run_sft

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]
TASK = {"name": "countdown", "params": {"num_numbers": 2, "max_number": 20, "min_target": 1, "max_target": 30}}
EVAL = {"num_problems": 2, "batch_size": 2, "max_new_tokens": 6}
RECIPES = Path(__file__).resolve().parent.parent / "recipes"


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """The small preset's matrices gain nothing from a second thread, and on a shared 2-core machine
    under load OpenMP's waiting made the resume test 17 s instead of 1.5 s. Restored afterwards, so
    other test files keep their setting."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make_batch(policy: HFPolicy) -> TokenBatch:
    rows = [("1 2 -> 3:", "1+2", 1.0), ("1 2 -> 3:", "2*1", 0.0), ("4 5 -> 20:", "4*5", 1.0), ("7 -> 7:", "7", 1.0)]
    episodes = [
        Episode(
            [Segment("prompt", policy.encode_prompt(p)), Segment("completion", policy.encode_completion(a), trainable=True)],
            group=i // 2,
            reward=r,
        )
        for i, (p, a, r) in enumerate(rows)
    ]
    batch = collate(episodes, policy.pad_id)
    batch.advantages = grpo(batch.rewards, batch.groups, batch.mask)
    return batch


def lora_policy(model_dir: Path, r: int = 4) -> HFPolicy:
    policy = HFPolicy.load(model_dir, seed=0)
    torch.manual_seed(0)
    apply_lora(policy, LoraConfig(r=r, alpha=2 * r, target_modules=TARGETS))
    return policy


def trainable(policy: HFPolicy) -> dict[str, torch.Tensor]:
    return {n: p for n, p in policy.model.named_parameters() if p.requires_grad}


def base_state(policy: HFPolicy) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in policy.model.named_parameters() if "lora_" not in n}


# --------------------------------------------------------------------------------------- adapter only
def test_apply_lora_trains_only_the_adapter(small_model_dir: Path) -> None:
    policy = lora_policy(small_model_dir, r=4)
    assert is_lora(policy)
    params = trainable(policy)
    assert params and all(".lora_A." in n or ".lora_B." in n for n in params)
    # r * (in + out) per targeted linear layer, nothing else.
    targeted = [m for n, m in policy.model.base_model.model.named_modules() if n.split(".")[-1] in TARGETS]
    config = policy.model.config
    assert len(targeted) == 4 * config.num_hidden_layers
    expected = sum(4 * (m.base_layer.in_features + m.base_layer.out_features) for m in targeted)
    assert sum(p.numel() for p in params.values()) == expected
    assert all(torch.count_nonzero(p) == 0 for n, p in params.items() if ".lora_B." in n)  # starts as the base

    before = base_state(policy)
    lora_before = {n: p.detach().clone() for n, p in params.items()}
    learner = Learner(policy, OptimConfig(lr=1e-2), total_steps=2)
    assert sum(p.numel() for g in learner.optimizer.param_groups for p in g["params"]) == expected
    learner.step(make_batch(policy), sft_objective)
    after = base_state(policy)
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert any(not torch.equal(lora_before[n], p) for n, p in params.items())


def test_load_adapter_gives_the_same_trainable_parameters_in_the_same_order(small_model_dir: Path, tmp_path: Path) -> None:
    fresh = lora_policy(small_model_dir)
    save_policy(fresh, tmp_path / "adapter")
    resumed = HFPolicy.load(small_model_dir, seed=0)
    load_adapter(resumed, tmp_path / "adapter")
    a, b = trainable(fresh), trainable(resumed)
    assert list(a) == list(b)  # the optimizer state of a checkpoint maps onto them one to one
    assert all(torch.equal(a[n], b[n]) for n in a)
    with pytest.raises(ValueError, match="already carries"):
        apply_lora(resumed, LoraConfig())


# --------------------------------------------------------------------------------------- reference
def test_adapter_disabled_policy_is_the_reference(small_model_dir: Path) -> None:
    policy = HFPolicy.load(small_model_dir, seed=0)
    storage = {n: p.data_ptr() for n, p in policy.model.named_parameters()}
    torch.manual_seed(0)
    apply_lora(policy, LoraConfig(r=4, alpha=8, target_modules=TARGETS))
    learner = Learner(policy, OptimConfig(lr=1e-2), total_steps=4, adapter_reference=True)
    batch = make_batch(policy)

    learner.add_reference_logprobs(batch)
    start = learner.score(policy, batch)
    assert torch.equal(batch.ref_logprobs, start)  # B = 0: the adapter starts as a no-op

    for _ in range(3):
        learner.step(batch, sft_objective)
    now = learner.score(policy, batch)
    assert not torch.allclose(now, start, atol=1e-4)
    learner.add_reference_logprobs(batch)
    base = HFPolicy.load(small_model_dir, seed=0)
    # Same weights, same numbers up to float rounding (PEFT and plain Llama may take different kernels).
    assert torch.allclose(batch.ref_logprobs, learner.score(base, batch), atol=1e-5, rtol=0)
    assert torch.equal(learner.score(policy, batch), now)  # the adapter is back on after scoring

    # One copy of the base weights: the policy wraps the loaded model's own tensors, no reference model.
    assert learner.reference is None
    wrapped = {n.removeprefix("base_model.model.").replace(".base_layer.", "."): p for n, p in policy.model.named_parameters() if "lora_" not in n}
    assert {n: p.data_ptr() for n, p in wrapped.items()} == storage


# --------------------------------------------------------------------------------------- save and load
@pytest.fixture(scope="module")
def trained(small_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[HFPolicy, Path]:
    policy = lora_policy(small_model_dir)
    learner = Learner(policy, OptimConfig(lr=1e-2), total_steps=3)
    batch = make_batch(policy)
    for _ in range(3):
        learner.step(batch, sft_objective)
    out = save_policy(policy, tmp_path_factory.mktemp("lora") / "final", merged=True)
    return policy, out


def logp(policy: HFPolicy) -> torch.Tensor:
    batch = make_batch(policy)
    with torch.no_grad():
        return policy.token_logprobs(batch.input_ids, batch.attention_mask) * batch.attention_mask[:, 1:]


def test_saved_adapter_reloads_with_identical_logprobs(trained: tuple[HFPolicy, Path]) -> None:
    policy, out = trained
    assert (out / "adapter_config.json").is_file() and (out / "adapter_model.safetensors").is_file()
    assert not (out / "config.json").exists()
    base = json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"]
    assert Path(base).is_absolute() and (Path(base) / "config.json").is_file()
    loaded = HFPolicy.load(out)
    assert is_lora(loaded) and not trainable(loaded)
    assert torch.equal(logp(loaded), logp(policy))


def test_merged_weights_load_without_peft(trained: tuple[HFPolicy, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    from transformers import AutoModelForCausalLM

    policy, out = trained
    merged_dir = out / "merged"
    assert (merged_dir / "config.json").is_file() and not (merged_dir / "adapter_config.json").exists()
    assert not any("lora" in k for k in load_file(str(merged_dir / "model.safetensors")))
    monkeypatch.setitem(sys.modules, "peft", None)  # any `import peft` during loading now fails
    model = AutoModelForCausalLM.from_pretrained(merged_dir)
    monkeypatch.undo()
    merged = HFPolicy(model, policy.tokenizer)
    assert torch.allclose(logp(merged), logp(policy), atol=1e-5)
    assert is_lora(policy)  # merging ran on a copy: the live policy keeps its adapter


def test_eval_command_loads_an_adapter_folder(trained: tuple[HFPolicy, Path], tmp_path: Path) -> None:
    _, out = trained
    assert not (out / "config.json").exists()
    code = main(
        [
            "eval", str(RECIPES / "countdown-eval.yaml"),
            "--set", f"run_dir={tmp_path / 'eval'}", "--set", f"model.path={out}",
            "--set", "eval.num_problems=3", "--set", "eval.samples=0", "--set", "eval.pass_k=[1]",
            "--set", "eval.max_new_tokens=6",
        ]
    )
    assert code == 0
    assert json.loads((tmp_path / "eval" / "eval.json").read_text())["num_problems"] == 3


def test_load_rejects_a_folder_that_is_neither_model_nor_adapter(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no config.json"):
        HFPolicy.load(tmp_path)


# --------------------------------------------------------------------------------------- driver
def sft_recipe(run_dir: Path, model: Path) -> SFTRecipe:
    return SFTRecipe(
        run_dir=str(run_dir),
        model={"path": str(model)},
        task=TASK,
        lora={"r": 4, "alpha": 8},
        steps=24,
        batch_size=4,
        optim={"lr": 1e-2, "warmup_steps": 4, "schedule": "cosine"},
        schedule={"checkpoint_every": 8, "eval_every": 0, "eval_problems": 4},
        eval=EVAL,
    )


def test_lora_sft_resumes_to_bit_identical_adapter(small_model_dir: Path, tmp_path: Path) -> None:
    straight = tmp_path / "straight"
    run_sft(sft_recipe(straight, small_model_dir))
    resumed = tmp_path / "resumed"
    with pytest.raises(Crash):
        run_sft(sft_recipe(resumed, small_model_dir), on_step=crash_at(21))
    assert latest_checkpoint(resumed / "checkpoints").name == "step_0000016"
    assert (latest_checkpoint(resumed / "checkpoints") / "model" / "adapter_config.json").is_file()
    run_sft(sft_recipe(resumed, small_model_dir))

    a = load_file(str(straight / "final" / "adapter_model.safetensors"))
    b = load_file(str(resumed / "final" / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and a
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(torch.count_nonzero(v) for k, v in a.items() if "lora_B" in k)  # it did train
    assert not (straight / "final" / "config.json").exists()  # the base model is not copied
    losses = [r["train/loss"] for r in read_metrics(resumed / "metrics.jsonl") if "train/loss" in r]
    assert losses == [r["train/loss"] for r in read_metrics(straight / "metrics.jsonl") if "train/loss" in r]


def test_lora_grpo_with_kl_runs_against_the_adapter_off_reference(small_model_dir: Path, tmp_path: Path) -> None:
    recipe = RLRecipe(
        run_dir=str(tmp_path / "rl"),
        model={"path": str(small_model_dir)},
        task=TASK,
        lora={"r": 4, "alpha": 8},
        steps=2,
        prompts_per_step=2,
        sampling={"n": 4, "temperature": 1.0, "max_new_tokens": 8},
        loss={"kl_coef": 0.05},
        optim={"lr": 1e-3, "micro_batch_size": 8},
        schedule={"checkpoint_every": 2, "eval_every": 0},
        eval=EVAL,
    )
    run_rl(recipe)
    rows = [r for r in read_metrics(tmp_path / "rl" / "metrics.jsonl") if "train/reward" in r]
    assert len(rows) == 2
    assert all("train/kl" in r for r in rows)
    assert rows[0]["train/kl"] == pytest.approx(0.0, abs=1e-6)  # step 0: adapter is a no-op
    assert (tmp_path / "rl" / "final" / "adapter_config.json").is_file()


def test_lora_on_the_builtin_tiny_model_saves_its_base_next_to_the_adapter(tmp_path: Path) -> None:
    from selfimprove.policy.tiny import build_tiny_model

    recipe = SFTRecipe(
        run_dir=str(tmp_path / "sft"),
        model={"path": "tiny:small"},
        task=TASK,
        lora={"r": 4, "alpha": 8},
        steps=2,
        batch_size=4,
        schedule={"checkpoint_every": 2},
        eval=EVAL,
    )
    run_sft(recipe)
    final = tmp_path / "sft" / "final"
    assert (final / "base" / "config.json").is_file()  # built in memory: nothing else on disk to point at
    loaded = HFPolicy.load(final)
    assert is_lora(loaded)
    fresh, tokenizer = build_tiny_model("small", seed=0)
    batch = make_batch(loaded)
    with loaded.model.disable_adapter(), torch.no_grad():
        off = loaded.token_logprobs(batch.input_ids, batch.attention_mask)
    assert torch.equal(off, HFPolicy(fresh, tokenizer).token_logprobs(batch.input_ids, batch.attention_mask).detach())
