"""Test-time search over reasoning steps (SPECS §5, §6): many problems in lockstep, every token counted.
The built-in searches register on the first lookup of `registry.SEARCHES` (see `builtin.py`)."""
