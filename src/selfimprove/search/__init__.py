"""Test-time search over reasoning steps (SPECS §5, §6): many problems in lockstep, every token counted."""
