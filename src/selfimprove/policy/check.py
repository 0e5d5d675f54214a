"""Check a model folder before a run writes anything: one line naming the file and the fix, instead of
a library's traceback halfway through (transformers builds an empty tokenizer from a folder without
tokenizer files and fails much later; a truncated safetensors file fails inside the Rust reader).

Checked: the folder and `config.json` (valid JSON with a `model_type`), the weights (safetensors
headers and sizes read by hand, since a header is 8 bytes of length and JSON; `.bin` files non-empty;
sharded indexes name files that exist), the tokenizer files, the tokenizer itself (loaded: it must
have an eos token, or a pad token to fall back on; the chat template when `chat: true`), and the
device. A LoRA adapter folder is checked through the base model its config names.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

from selfimprove.errors import ModelError

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
TOKENIZER_SETS = (("tokenizer.json",), ("vocab.json", "merges.txt"), ("tokenizer.model",), ("vocab.txt",), ("spiece.model",))
MAX_HEADER = 100 * 2**20  # safetensors caps its JSON header at 100 MB


def _read_json(path: Path, field: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError:
        raise ModelError(f"{field}: {path} is not UTF-8 text: re-save the model folder") from None
    except ValueError as err:
        raise ModelError(f"{field}: {path} is not valid JSON ({err}): re-save or re-download the model") from None
    if not isinstance(data, dict):
        raise ModelError(f"{field}: {path} should hold a JSON object: re-save the model folder")
    return data


def check_safetensors(path: Path, field: str = "model.path") -> None:
    """A safetensors file: its header parses and its tensors' data fits the file exactly."""
    size = path.stat().st_size
    fix = "re-save or re-download the weights"
    if size == 0:
        raise ModelError(f"{field}: {path} is empty (0 bytes): {fix}")
    if size < 8:
        raise ModelError(f"{field}: {path} is truncated ({size} bytes): {fix}")
    with path.open("rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        if length > MAX_HEADER or 8 + length > size:
            raise ModelError(f"{field}: {path} is not a safetensors file or is truncated (bad header length): {fix}")
        try:
            header = json.loads(f.read(length).decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise ModelError(f"{field}: {path} has a damaged safetensors header: {fix}") from None
    if not isinstance(header, dict):
        raise ModelError(f"{field}: {path} has a damaged safetensors header: {fix}")
    ends = [info["data_offsets"][1] for name, info in header.items()
            if name != "__metadata__" and isinstance(info, dict) and isinstance(info.get("data_offsets"), list)]
    needed = 8 + length + max(ends, default=0)
    if needed > size:
        raise ModelError(f"{field}: {path} is truncated ({size} bytes, its header needs {needed}): {fix}")


def _check_weights(folder: Path, field: str) -> None:
    for index_name in INDEXES:
        index = folder / index_name
        if index.is_file():
            shards = sorted(set(_read_json(index, field).get("weight_map", {}).values()))
            missing = [s for s in shards if not (folder / s).is_file()]
            if not shards or missing:
                raise ModelError(f"{field}: {index} names weight files that are missing ({', '.join(missing) or 'none listed'})")
            for shard in shards:
                if shard.endswith(".safetensors"):
                    check_safetensors(folder / shard, field)
            return
    for name in WEIGHT_FILES:
        file = folder / name
        if file.is_file():
            if name.endswith(".safetensors"):
                check_safetensors(file, field)
            elif file.stat().st_size == 0:
                raise ModelError(f"{field}: {file} is empty (0 bytes): re-save or re-download the weights")
            return
    raise ModelError(f"{field}: no weights in {folder} (model.safetensors or pytorch_model.bin, or a sharded index)")


def check_tokenizer(folder: Path, *, chat: bool, field: str = "model.path") -> None:
    """Tokenizer files exist and load to a tokenizer with an eos (or pad) token, and a chat template if asked."""
    if not any(all((folder / name).is_file() for name in names) for names in TOKENIZER_SETS):
        raise ModelError(
            f"{field}: no tokenizer files in {folder} (tokenizer.json, or vocab.json + merges.txt, or "
            f"tokenizer.model): save the tokenizer into the model folder (tokenizer.save_pretrained)"
        )
    config = folder / "tokenizer_config.json"
    if config.is_file():
        _read_json(config, field)
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(folder)
    except Exception as err:  # the library's own message, kept to one line
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelError(f"{field}: the tokenizer in {folder} does not load ({first})") from None
    if len(tokenizer) == 0:
        raise ModelError(f"{field}: the tokenizer in {folder} is empty: save the tokenizer into the model folder")
    if tokenizer.eos_token_id is None and tokenizer.pad_token_id is None:
        raise ModelError(
            f"{field}: the tokenizer in {folder} has no eos_token (and no pad_token): set eos_token in "
            f"tokenizer_config.json (answers must be able to end)"
        )
    if chat and not getattr(tokenizer, "chat_template", None):
        raise ModelError(
            f"model.chat: the tokenizer in {folder} has no chat template: set model.chat to false, or add "
            f"a chat_template to tokenizer_config.json"
        )


def check_device(device: str) -> None:
    """The device exists on this machine (`cuda` without CUDA is refused before loading anything)."""
    kind = device.split(":", 1)[0]
    if kind == "cpu":
        return
    import torch

    if kind == "cuda":
        if not torch.cuda.is_available():
            raise ModelError(f"model.device: {device!r} but CUDA is not available on this machine: use cpu")
        index = int(device.split(":", 1)[1]) if ":" in device else 0
        if index >= torch.cuda.device_count():
            raise ModelError(f"model.device: {device!r} but this machine has {torch.cuda.device_count()} CUDA device(s)")
        return
    if kind == "mps":
        if not torch.backends.mps.is_available():
            raise ModelError(f"model.device: {device!r} but MPS is not available on this machine: use cpu")
        return
    raise ModelError(f"model.device: unknown device {device!r} (use cpu, cuda, cuda:N or mps)")


def check_model_folder(path: str | Path, *, chat: bool = False, device: str = "cpu", field: str = "model.path") -> None:
    """Everything loading `path` needs, checked in order; a LoRA adapter folder through its base model."""
    check_device(device)
    folder = Path(path).expanduser()
    if not folder.exists():
        raise ModelError(f"{field}: {folder} does not exist (a Hugging Face model folder, or `tiny` for the built-in model)")
    if not folder.is_dir():
        raise ModelError(f"{field}: {folder} is a file; give the model's folder")
    if not (folder / "config.json").is_file() and (folder / "adapter_config.json").is_file():
        base = _read_json(folder / "adapter_config.json", field).get("base_model_name_or_path")
        if not base:
            raise ModelError(f"{field}: {folder}/adapter_config.json names no base model (base_model_name_or_path)")
        base_dir = Path(base) if Path(base).is_absolute() or (Path(base) / "config.json").is_file() else folder / base
        check_model_folder(base_dir, chat=False, device=device, field=f"{field} (the adapter's base model)")
        tokenizer_folder = folder if (folder / "tokenizer_config.json").is_file() else base_dir
        check_tokenizer(tokenizer_folder, chat=chat, field=field)
        return
    if not (folder / "config.json").is_file():
        raise ModelError(f"{field}: {folder} has no config.json, so it is not a Hugging Face model folder")
    config = _read_json(folder / "config.json", field)
    if not config.get("model_type"):
        raise ModelError(f"{field}: {folder}/config.json has no model_type: re-save the model (save_pretrained)")
    _check_weights(folder, field)
    check_tokenizer(folder, chat=chat, field=field)
