"""MCTS on a real policy and critics (the policy binding of the generic engine in `engine.py`): states
are `State`s, one tree per problem.

`expand` samples next steps with `propose_steps`, `rollout` finishes copies of states with `complete`
(optionally on a cheaper rollout policy, AlphaLLM's pi_fast) and averages the outcome critic,
`evaluate` scores finished states with the outcome critic (an ORM, or the verifier when the search
makes training data) and unfinished ones with the value critic (a value function, a PRM or a
combination). Each method is one batched call over every tree, and every call is charged to the
problems' `Budget`s: policy tokens inside `propose_steps`/`complete`, critic calls here.
"""

from __future__ import annotations

from typing import Sequence

import torch

from selfimprove.critics.base import Critic, score_states
from selfimprove.policy.base import Sampler, SamplingParams
from selfimprove.rollout.budget import Budget
from selfimprove.rollout.expand import complete, propose_steps, root_states
from selfimprove.rollout.state import State, StepRule
from selfimprove.search.mcts.engine import MCTSConfig, run_mcts
from selfimprove.search.mcts.tree import Tree, tree_stats
from selfimprove.search.result import SearchResult, make_results
from selfimprove.tasks.base import Problem, Task
from selfimprove.search.registry import register_search


class PolicyEnv:
    """A `TreeEnv` of `State`s. Tree i is problem i (`State.problem_index`)."""

    def __init__(
        self,
        policy: Sampler,
        problems: Sequence[Problem],
        budgets: Sequence[Budget],
        *,
        rule: StepRule,
        params: SamplingParams,
        max_answer_tokens: int,
        outcome: Critic,
        value: Critic | None = None,
        rollout_policy: Sampler | None = None,
        rollout_params: SamplingParams | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        if len(budgets) != len(problems):
            raise ValueError(f"{len(budgets)} budgets for {len(problems)} problems")
        self.policy = policy
        self.problems = list(problems)
        self.budgets = list(budgets)
        self.rule = rule
        self.params = params
        self.max_answer_tokens = max_answer_tokens
        self.outcome = outcome
        self.value = value
        self.rollout_policy = rollout_policy if rollout_policy is not None else policy
        self.rollout_params = rollout_params if rollout_params is not None else params
        self.generator = generator

    # ---- TreeEnv
    def tree_of(self, state: State) -> int:
        return state.problem_index

    def is_terminal(self, state: State) -> bool:
        return state.finished

    def step_text(self, state: State) -> str:
        return state.steps[-1] if state.steps else ""

    def exhausted(self, tree: int) -> bool:
        return self.budgets[tree].exhausted

    def expand(self, states: Sequence[State], widths: Sequence[int]) -> list[list[tuple[State, float]]]:
        children = propose_steps(
            self.policy, states, list(widths), self.rule, self.params, self.budgets,
            max_answer_tokens=self.max_answer_tokens, generator=self.generator,
        )
        return [[(child, 1.0) for child in kids] for kids in children]

    def evaluate(self, states: Sequence[State]) -> list[float]:
        """Outcome critic for finished states, value critic for the rest: at most two critic calls."""
        out = [0.0] * len(states)
        finished = [i for i, s in enumerate(states) if s.finished]
        open_ = [i for i, s in enumerate(states) if not s.finished]
        if open_ and self.value is None:
            raise ValueError("unfinished states need a value critic (or use fast rollouts with value_weight 0)")
        for critic, idx in ((self.outcome, finished), (self.value, open_)):
            if idx:
                assert critic is not None
                for i, v in zip(idx, self._score(critic, [states[i] for i in idx])):
                    out[i] = v
        return out

    def rollout(self, states: Sequence[State], m: int) -> list[float]:
        """Mean outcome score of `m` completions of each state: one policy call, one critic call."""
        copies = [s for s in states for _ in range(m)]
        done = complete(
            self.rollout_policy, copies, self.rule, self.rollout_params, self.budgets, self.max_answer_tokens,
            generator=self.generator,
        )
        scores = self._score(self.outcome, done)
        return [sum(scores[i * m : (i + 1) * m]) / m for i in range(len(states))]

    def finish(self, states: Sequence[State]) -> list[State]:
        """Complete each state once, even for a problem whose budget is spent: the search must answer.

        The tokens are charged to the real budgets afterwards (so a result may exceed its token limit
        by this one completion, and says so in its spend)."""
        free = [Budget() for _ in self.budgets]
        done = complete(
            self.policy, states, self.rule, self.params, free, self.max_answer_tokens, generator=self.generator
        )
        for budget, spent in zip(self.budgets, free):
            budget.add(spent)
        return done

    # ---- helpers
    def _score(self, critic: Critic, states: Sequence[State]) -> list[float]:
        return score_states(critic, self.problems, states, self.budgets)


def mcts_trees(
    policy: Sampler,
    problems: Sequence[Problem],
    config: MCTSConfig,
    critic: Critic | None = None,
    budgets: Sequence[Budget] | None = None,
    *,
    outcome: Critic | None = None,
    rollout_policy: Sampler | None = None,
) -> tuple[list[Tree[State]], list[Budget]]:
    """Search every problem with MCTS on `policy`; the trees (for training data) and the budgets.

    `critic` values unfinished states (a value function, PRM or combination) and, unless `outcome` is
    given, finished ones too; `outcome` scores finished states and fast rollouts (an ORM, or
    `VerifierCritic(task)` when the search makes training data). Without a value critic, set
    `value_weight=0` and `fast_rollouts > 0` (classic MCTS: leaves valued by rollouts only).
    `rollout_policy` is AlphaLLM's cheaper fast-rollout policy (default: `policy`).
    """
    scorer = outcome if outcome is not None else critic
    if scorer is None:
        raise ValueError("MCTS needs a critic (value/ORM), or outcome=VerifierCritic(task) when making training data")
    if critic is None and (config.uses_value or config.adaptive_branching):
        raise ValueError(
            "valuing unfinished states (value_weight > 0 or adaptive_branching) needs a value critic; "
            "without one set value_weight=0 and fast_rollouts > 0"
        )
    spent = config.budgets(len(problems), budgets)
    sampling = config.sampling()
    env = PolicyEnv(
        policy, problems, spent,
        rule=config.rule(),
        params=sampling,
        max_answer_tokens=config.max_answer_tokens,
        outcome=scorer,
        value=critic,
        rollout_policy=rollout_policy,
        rollout_params=SamplingParams(temperature=config.rollout_temperature, top_p=config.top_p),
        generator=config.generator(policy),
    )
    return run_mcts(env, root_states(policy, problems), config), spent


@register_search("mcts", MCTSConfig)  # eta-MCTS (SPECS §5); takes outcome= and rollout_policy=
def mcts_search(
    policy: Sampler,
    task: Task,
    problems: Sequence[Problem],
    config: MCTSConfig,
    critic: Critic | None = None,
    budgets: Sequence[Budget] | None = None,
    *,
    outcome: Critic | None = None,
    rollout_policy: Sampler | None = None,
) -> list[SearchResult]:
    """eta-MCTS on `policy` (see `mcts_trees` for the critics); one `SearchResult` per problem, whose
    `score` is the outcome critic's score of the answer and `candidates` the number of tree nodes."""
    trees, spent = mcts_trees(policy, problems, config, critic, budgets, outcome=outcome, rollout_policy=rollout_policy)
    return tree_results(task, problems, trees, spent)


def tree_results(
    task: Task, problems: Sequence[Problem], trees: Sequence[Tree[State]], budgets: Sequence[Budget]
) -> list[SearchResult]:
    """Bundle MCTS trees as search results (the verdict is for reporting only)."""
    return make_results(
        "mcts",
        task,
        problems,
        [t.answer for t in trees],
        budgets,
        [len(t.nodes) for t in trees],
        scores=[t.answer_value for t in trees],
        stats=[tree_stats(t) for t in trees],
    )
