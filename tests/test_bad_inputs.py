"""Every user-caused error: one line naming the file or field and the fix, exit code 2, nothing written.

Each case breaks one input of a small SFT (or eval) run, runs the CLI in-process, and checks the exit
code, the first line on stderr, and that the run folder was never created. `BAD_INPUTS` is also the
table in the closing note of issue 13 (`python tests/test_bad_inputs.py` prints it).
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import sys
from pathlib import Path
from typing import Callable

import pytest
import yaml

from selfimprove.cli import main
from selfimprove.policy.tiny import write_tiny_model

ROOT = Path(__file__).resolve().parent.parent

Setup = Callable[[Path], tuple[list[str], dict]]  # tmp -> (extra CLI args, recipe changes)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("model") / "tiny", "small", 0)


def _copy_model(tmp: Path, source: Path) -> Path:
    target = tmp / "model"
    shutil.copytree(source, target)
    return target


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _rows(n: int) -> list[dict]:
    return [{"question": f"{i}+{i}", "answer": str(2 * i)} for i in range(n)]


def _dataset(path: Path, **params: object) -> dict:
    return {"task": {"name": "dataset", "params": {"path": str(path), "prompt_field": "question", **params}}}


# --------------------------------------------------------------------------------------- the cases
def _weights(mutate: Callable[[Path], None]) -> Callable[[Path, Path], dict]:
    def setup(tmp: Path, model: Path) -> dict:
        folder = _copy_model(tmp, model)
        mutate(folder / "model.safetensors")
        return {"model": {"path": str(folder)}}

    return setup


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _garbage(path: Path) -> None:
    path.write_bytes(struct.pack("<Q", 12) + b"not json at all" * 10)


def _half_config(tmp: Path, model: Path) -> dict:
    folder = _copy_model(tmp, model)
    text = (folder / "config.json").read_text()
    (folder / "config.json").write_text(text[: len(text) // 2])
    return {"model": {"path": str(folder)}}


def _no_tokenizer(tmp: Path, model: Path) -> dict:
    folder = _copy_model(tmp, model)
    (folder / "tokenizer.json").unlink()
    return {"model": {"path": str(folder)}}


def _no_eos(tmp: Path, model: Path) -> dict:
    folder = _copy_model(tmp, model)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    for key in ("eos_token", "pad_token"):
        config.pop(key, None)
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return {"model": {"path": str(folder)}}


def _no_chat_template(tmp: Path, model: Path) -> dict:
    folder = _copy_model(tmp, model)
    for name in ("chat_template.jinja",):
        (folder / name).unlink(missing_ok=True)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return {"model": {"path": str(folder), "chat": True}}


def _non_utf8(tmp: Path, model: Path) -> dict:
    path = tmp / "data.jsonl"
    _jsonl(path, _rows(100))
    with path.open("ab") as f:
        f.write(b'{"question": "caf\xe9", "answer": "1"}\n')
    return _dataset(path)


def _bad_json(tmp: Path, model: Path) -> dict:
    path = _jsonl(tmp / "data.jsonl", _rows(100))
    with path.open("a") as f:
        f.write('{"question": "1+1", "answer": 2\n')
    return _dataset(path)


def _run_dir_is_file(tmp: Path, model: Path) -> dict:
    (tmp / "a_file").write_text("")
    return {"run_dir": str(tmp / "a_file")}


def _run_dir_not_writable(tmp: Path, model: Path) -> dict:
    locked = tmp / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    return {"run_dir": str(locked / "run")}


# (name, setup, expected start of the first line)
BAD_INPUTS: list[tuple[str, Callable[[Path, Path], dict], str]] = [
    ("40-row JSONL, default test_fraction", lambda t, m: _dataset(_jsonl(t / "d.jsonl", _rows(40))),
     "selfimprove: data error: task.params.test_fraction:"),
    ("too few test problems for eval.num_problems", lambda t, m: {**_dataset(_jsonl(t / "d.jsonl", _rows(200)), test_fraction=0.1),
                                                                 "eval": {"num_problems": 200}},
     "selfimprove: data error: eval.num_problems: the test split"),
    ("gsm8k file with 40 rows", lambda t, m: {"task": {"name": "gsm8k", "params": {"path": str(_jsonl(
        t / "g.jsonl", [{"question": f"q{i}", "answer": f"#### {i}"} for i in range(40)]))}}, "eval": {"num_problems": 200}},
     "selfimprove: data error: eval.num_problems:"),
    ("truncated safetensors", _weights(_truncate), "selfimprove: model error: model.path:"),
    ("zero-byte safetensors", _weights(lambda p: p.write_bytes(b"")), "selfimprove: model error: model.path:"),
    ("garbage safetensors", _weights(_garbage), "selfimprove: model error: model.path:"),
    ("half a config.json", _half_config, "selfimprove: model error: model.path:"),
    ("missing tokenizer files", _no_tokenizer, "selfimprove: model error: model.path: no tokenizer files"),
    ("tokenizer with no eos/pad", _no_eos, "selfimprove: model error: model.path: the tokenizer"),
    ("chat: true without a chat template", _no_chat_template, "selfimprove: model error: model.chat:"),
    ("model.device=cuda without CUDA", lambda t, m: {"model": {"path": str(m), "device": "cuda"}},
     "selfimprove: model error: model.device:"),
    ("model folder that does not exist", lambda t, m: {"model": {"path": str(t / "nope")}},
     "selfimprove: model error: model.path:"),
    ("LoRA target not in the model", lambda t, m: {"model": {"path": str(m)}, "lora": {"target_modules": ["c_attn"]}},
     "selfimprove: model error: lora.target_modules:"),
    ("empty JSONL", lambda t, m: _dataset(_jsonl(t / "e.jsonl", [])),
     "selfimprove: data error: task.params.path:"),
    ("missing column", lambda t, m: _dataset(_jsonl(t / "d.jsonl", [{"q": "1", "answer": "1"}] * 100)),
     "selfimprove: data error:"),
    ("invalid JSON line", _bad_json, "selfimprove: data error:"),
    ("non-UTF-8 bytes", _non_utf8, "selfimprove: data error:"),
    ("data file that does not exist", lambda t, m: _dataset(t / "missing.jsonl"), "selfimprove: data error: task.params.path:"),
    ("run_dir is a file", _run_dir_is_file, "selfimprove: run_dir error: run_dir"),
    ("run_dir not writable", _run_dir_not_writable, "selfimprove: run_dir error: run_dir"),
    ("unknown task import path", lambda t, m: {"task": {"name": "no_such_module:Task"}}, "selfimprove: config error: task.name:"),
    ("unknown recipe field", lambda t, m: {"stepz": 3}, "selfimprove: config error: stepz: unknown field"),
]


def _recipe(tmp: Path, model: Path, changes: dict) -> Path:
    recipe = {
        "run_dir": str(tmp / "run"),
        "model": {"path": str(model)},
        "task": {"name": "countdown"},
        "steps": 1,
        "batch_size": 4,
        "eval": {"num_problems": 2, "max_new_tokens": 4},
    }
    for key, value in changes.items():
        recipe[key] = {**recipe[key], **value} if isinstance(value, dict) and isinstance(recipe.get(key), dict) else value
    path = tmp / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


@pytest.mark.parametrize(("name", "setup", "first_line"), BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_gives_one_line_exit_2_and_writes_nothing(
    name: str, setup: Callable[[Path, Path], dict], first_line: str, model_dir: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    if name == "run_dir not writable" and os.geteuid() == 0:
        pytest.skip("root can write anywhere")
    changes = setup(tmp_path, model_dir)
    recipe = _recipe(tmp_path, model_dir, changes)
    run_dir = Path(yaml.safe_load(recipe.read_text())["run_dir"])
    existed = run_dir.exists()
    code = main(["sft", str(recipe)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, err
    assert err and err[0].startswith(first_line), err
    assert len(err) == 1, err
    if not existed:
        assert not run_dir.exists()


def test_an_unexpected_error_ends_with_one_line_and_a_log_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    def boom(args: object) -> int:
        raise RuntimeError("something broke\nsecond line")

    monkeypatch.setenv("SELFIMPROVE_LOG_DIR", str(tmp_path))
    monkeypatch.setattr("selfimprove.cli.cmd_tasks", boom)
    assert main(["tasks"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("selfimprove: unexpected RuntimeError: something broke (traceback in "), err
    log = Path(err[0].rsplit("traceback in ", 1)[1].rstrip(")"))
    assert log.parent == tmp_path and "second line" in log.read_text() and "Traceback" in log.read_text()


if __name__ == "__main__":  # the table for the note
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        model = write_tiny_model(Path(d) / "m", "small", 0)
        print("| bad input | first line (exit code) |\n|---|---|")
        for case_name, case_setup, _ in BAD_INPUTS:
            case_dir = Path(tempfile.mkdtemp(dir=d))
            recipe_path = _recipe(case_dir, model, case_setup(case_dir, model))
            import contextlib
            import io

            buffer = io.StringIO()
            with contextlib.redirect_stderr(buffer):
                rc = main(["sft", str(recipe_path)])
            first = (buffer.getvalue().strip().splitlines() or [""])[0].replace(d, "...")
            print(f"| {case_name} | `{first}` ({rc}) |")
        sys.exit(0)
