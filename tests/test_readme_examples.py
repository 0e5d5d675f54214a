"""The guides' plug-in examples are the files the tests run: each code block marked with a file name
equals that file, and the recipes the README and the guides name exist and name those files."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
TASKS_GUIDE = (ROOT / "docs" / "guides" / "tasks.md").read_text()


def test_every_marked_code_block_equals_its_file() -> None:
    blocks = re.findall(r"<!-- (\S+) -->\n```python\n(.*?)```", TASKS_GUIDE, re.S)
    assert {name for name, _ in blocks} == {"examples/sums/my_rewards.py", "examples/sums/my_task.py"}
    for name, code in blocks:
        assert code == (ROOT / name).read_text(), f"the guide's block for {name} differs from the file"


def test_the_readmes_tool_and_environment_are_the_files_the_recipes_name() -> None:
    blocks = dict(re.findall(r"<!-- (\S+) -->\n```python\n(.*?)```", README, re.S))
    assert set(blocks) == {"examples/tools/my_tools.py", "examples/tools/my_env.py"}
    for name, code in blocks.items():
        assert code == (ROOT / name).read_text(), f"the README's block for {name} differs from the file"
    for recipe in ("tools-sums-sft.yaml", "tools-sums-grpo.yaml"):
        env = yaml.safe_load((ROOT / "recipes" / recipe).read_text())["env"]
        assert env["name"] == "examples.tools.my_env:FrugalTools" and env["tools"] == ["examples.tools.my_tools:add"]


def test_the_readme_recipes_name_the_example_files() -> None:
    grpo = yaml.safe_load((ROOT / "recipes" / "dataset-grpo.yaml").read_text())
    assert grpo["task"]["params"]["reward"] == "examples.sums.my_rewards:final_number_reward"
    own = yaml.safe_load((ROOT / "recipes" / "own-task-sft.yaml").read_text())
    assert own["task"]["name"] == "examples.sums.my_task:ReverseTask"
    for recipe in re.findall(r"selfimprove \w+ +recipes/([\w-]+\.yaml)", README + TASKS_GUIDE):
        assert (ROOT / "recipes" / recipe).is_file(), recipe
