"""A recipe mistake is reported before torch, transformers or any other heavy library is imported
(within about a second), and the CLI's parser is built from the method modules without them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("torch", "transformers", "numpy", "peft", "datasets", "sympy", "math_verify", "reasoning_gym", "matplotlib",
         "tensorboard", "pandas", "pyarrow")

PROBE = """
import sys
from selfimprove.cli import main
code = main(sys.argv[1:])
heavy = [m for m in {heavy!r} if m in sys.modules]
print("HEAVY", ",".join(heavy))
sys.exit(code)
"""


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", PROBE.format(heavy=HEAVY), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.parametrize(
    ("command", "recipe", "mistake"),
    [
        ("train", "countdown-grpo.yaml", "stepz=3"),
        ("sft", "countdown-sft.yaml", "optim.lr=-1"),
        ("run", "r3-chain.yaml", "curriculum.kind=sideways"),
        ("alphallm", "alphallm-countdown.yaml", "rounds=zero"),
        ("eval", "countdown-eval.yaml", "eval.num_problems=0"),
        ("search", "search-countdown.yaml", "max_tokenz=1"),
        ("compare", "selfcorrect-countdown.yaml", "budget_tokens=-5"),
        ("critic train", "critic-countdown.yaml", "labelz=1"),
    ],
)
def test_a_recipe_mistake_is_reported_before_any_heavy_import(command: str, recipe: str, mistake: str) -> None:
    done = _run([*command.split(), f"recipes/{recipe}", "--set", mistake], ROOT)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("selfimprove: config error: "), done.stderr
    assert "HEAVY \n" in done.stdout or done.stdout.strip() == "HEAVY", (done.stdout, "imported before the error")


def test_help_and_the_parser_need_no_heavy_import(tmp_path: Path) -> None:
    done = _run(["tasks", "--params", "countdown"], tmp_path)
    assert done.returncode == 0 and "num_numbers: int = 3" in done.stdout
    assert done.stdout.strip().endswith("HEAVY"), done.stdout
