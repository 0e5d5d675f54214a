"""A tool of your own (recipes/tools-sums-*.yaml): a typed function whose docstring describes its
arguments, as Hugging Face chat templates and TRL's `tools=` take it."""


def add(a: int, b: int) -> int:
    """Add two integers.

    Args:
        a: The first number.
        b: The second number.
    """
    return a + b
