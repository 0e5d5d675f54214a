"""A task of your own as a class, used by import path (`task.name: examples.sums.my_task:ReverseTask`).

A task makes problems deterministically from (split, index) and judges an answer; the recipe's
`task.params` are validated by its `Config`. No registration or library edit is needed.
`GeneratedTask` draws candidates from a seeded generator and keeps one whose key hashes into the
asked split, so train and test never share a word.
"""

from selfimprove.tasks import Problem, TaskConfig, Verdict
from selfimprove.tasks.base import GeneratedTask


class ReverseConfig(TaskConfig):
    length: int = 5
    """Letters per word."""


class ReverseTask(GeneratedTask):
    """Write the given word backwards."""

    Config = ReverseConfig

    def draw(self, rng, split, index):
        word = "".join(rng.choice("abcdefghij") for _ in range(self.config.length))
        if not self.in_split(word, split):
            return None  # this candidate belongs to the other split: draw again
        return Problem(id=f"reverse-{split}-{index}", prompt=f"reverse {word}:", answer=word[::-1],
                       demonstration=(word[::-1],))

    def judge(self, problem, text):
        answer = text.strip().splitlines()[0].strip() if text.strip() else ""
        return Verdict.right() if answer == problem.answer else Verdict.wrong(f"got {answer!r}")
