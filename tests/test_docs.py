"""The guides: the site builds with `mkdocs build --strict`, the README stays a quick start, and every
command in the README and the guides is run by a test: the cheap ones here (with arguments that make
them small), the others by the test named for them, or marked as needing a GPU or an external program."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]

# Commands run here, in-process, with these overrides appended (a small model, one step, two problems).
TRAIN = ["steps=1", "prompts_per_step=2", "sampling.n=2", "sampling.max_new_tokens=4", "eval.num_problems=2",
         "eval.max_new_tokens=4", "schedule.eval_every=0"]
SFT = ["steps=1", "batch_size=2", "num_problems=4", "eval.num_problems=2", "eval.max_new_tokens=4", "schedule.eval_every=0"]
EVAL = ["eval.num_problems=2", "eval.max_new_tokens=4", "eval.batch_size=2"]
SMOKE: dict[str, list[str]] = {"sft": SFT, "train": TRAIN, "dpo": TRAIN, "run": TRAIN, "eval": EVAL}
# Commands a named test file runs (that subcommand or recipe, with small settings of its own).
SUBCOMMANDS = {
    "compare": "tests/test_compare.py", "warmup": "tests/test_warmup.py", "score": "tests/test_score.py",
    "star": "tests/test_star.py", "pair-sft": "tests/test_pair_sft.py", "rrr": "tests/test_rrr.py", "r3": "tests/test_r3.py",
    "alphallm": "tests/test_alphallm.py", "critic": "tests/test_critics.py", "search": "tests/test_search_cli.py",
    "reproduce": "tests/test_reproduce.py", "models": "tests/test_smollm2.py", "report": "tests/test_html_report.py",
}
OVERRIDES = {"engine.kind=ray": "tests/test_ray_pool.py", "async.max_staleness": "tests/test_async_rollouts.py",
             "model.path=/models/": "tests/test_own_model.py"}
FLAGS = {"--attempts": "tests/test_cli.py"}
RECIPES = {"smollm2-": "tests/test_smollm2.py"}
NEEDS_GPU = ("engine.kind=vllm",)
ELSEWHERE = {"make demo": "the demo (`make demo`)", "make test": "CI (`.ci/run`)", "make reproduce": "tests/test_reproduce.py",
             "ray start": "Ray's own command", "OMP_NUM_THREADS=1 .venv/bin/python bench/": "bench/README.md",
             "torchrun ": "tests/test_distributed.py"}


def commands() -> list[tuple[str, str]]:
    """(page, command) for every command line in the pages' bash blocks (continuations joined, comments cut)
    and every inline `selfimprove ... recipes/X.yaml ...` span."""
    out = []
    for page in PAGES:
        text = page.read_text()
        for block in re.findall(r"```bash\n(.*?)```", text, re.S):
            for line in block.replace("\\\n", " ").splitlines():
                line = re.split(r"\s+#\s", line.strip())[0].strip()
                if line and not line.startswith("#"):
                    out.append((str(page.relative_to(ROOT)), line))
        prose = re.sub(r"```.*?```", "", text, flags=re.S)
        for span in re.findall(r"`(selfimprove [^`]*recipes/[^`]+)`", prose.replace("\n", " ")):
            out.append((str(page.relative_to(ROOT)), " ".join(span.split())))
    return out


def evidence(command: str) -> set[str]:
    """What a test file that runs this command mentions: its recipe's name, or its subcommand's."""
    words = shlex.split(command)
    found = {Path(w).stem for w in words if w.startswith("recipes/")}
    if words[0] == "selfimprove" and len(words) > 1:
        sub = words[1].replace("-", "_")
        found |= {f'"{words[1]}"', f"run_{sub}", f"{sub}(", f"{sub}.py"}
    sets = [words[i + 1] for i, w in enumerate(words[:-1]) if w == "--set"]
    found |= {o.split("=")[0] for o in sets}
    found |= {w for w in words if w.startswith("--") and w != "--set"}
    return found


def how(command: str) -> tuple[str, str]:
    """How a command is covered: ("here", subcommand), ("test", file), ("gpu", why) or ("elsewhere", what)."""
    for prefix, what in ELSEWHERE.items():
        if command.startswith(prefix):
            return "elsewhere", what
    words = shlex.split(command)
    assert words[0] == "selfimprove", command
    sets = [words[i + 1] for i, w in enumerate(words[:-1]) if w == "--set"]
    if any(o.startswith(marker) for o in sets for marker in NEEDS_GPU):
        return "gpu", "vLLM needs CUDA"
    for marker, test in OVERRIDES.items():
        if any(o.startswith(marker) for o in sets):
            return "test", test
    for flag, test in FLAGS.items():
        if flag in words:
            return "test", test
    for part, test in RECIPES.items():
        if any(part in w for w in words if w.startswith("recipes/")):
            return "test", test
    if words[1] in SUBCOMMANDS:
        return "test", SUBCOMMANDS[words[1]]
    return "here", words[1]


def test_the_site_builds_strictly(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    for page in ("index.html", "guides/running/index.html", "guides/methods/index.html", "DESIGN/index.html"):
        assert (tmp_path / "site" / page).is_file()


def test_the_readme_is_a_quick_start() -> None:
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 250
    for guide in ("docs/guides/running.md", "docs/guides/methods.md", "docs/guides/tasks.md", "docs/guides/search.md",
                  "docs/guides/scale.md", "docs/guides/results.md"):
        assert f"]({guide})" in readme and (ROOT / guide).is_file()


def test_every_command_is_covered() -> None:
    found = commands()
    assert len(found) > 30
    for page, command in found:
        kind, where = how(command)
        if kind == "test":
            assert (ROOT / where).is_file(), (page, command, where)
            text = (ROOT / where).read_text()
            assert any(e in text for e in evidence(command)), f"{where} runs nothing of {command!r} ({page})"
        if command.startswith("selfimprove"):
            from selfimprove.cli import build_parser

            build_parser().parse_args(shlex.split(command)[1:])  # the command parses as written
        for recipe in re.findall(r"recipes/[\w.-]+\.yaml", command):
            assert (ROOT / recipe).is_file(), (page, recipe)


def _here() -> list[str]:
    return sorted({c for _, c in commands() if how(c)[0] == "here"})


@pytest.mark.parametrize("command", _here())
def test_the_command_runs(command: str, tmp_path: Path, small_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The command as written, from the repository's root, with a small model and a small size."""
    from selfimprove.cli import main

    monkeypatch.chdir(ROOT)
    words = shlex.split(command)[1:]
    sub = words[0]
    words = [w.replace("runs/tiny", str(tmp_path / "tiny")) for w in words]
    extra: list[Any] = []
    if sub in SMOKE:
        extra = [*SMOKE[sub], f"run_dir={tmp_path / 'run'}"]
        if not any(w.startswith("model.path=") for w in words) or "model.path=runs/" in command:
            extra.append(f"model.path={_model(command, small_model_dir, tmp_path)}")
        if "eval.samples" in command:
            extra += ["eval.samples=2", "eval.pass_k=[1, 2]"]
    argv = words + [item for e in extra for item in ("--set", e)]
    assert main(argv) == 0, argv


def _model(command: str, small_model_dir: Path, tmp_path: Path) -> Path:
    """The model the command would find after the runs before it: the small model (the dataset recipes
    start from an SFT run on the dataset, which the small model stands in for as well)."""
    return small_model_dir
