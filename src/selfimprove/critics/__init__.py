"""Critics that score reasoning states: rule verifier, value function, PRM, ORM, weighted combination."""
