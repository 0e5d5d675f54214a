"""MCTS and eta-MCTS (SPECS §5): trees and selection (`tree.py`), the generic engine (`engine.py`) and its
binding to a policy and critics (`policy.py`)."""

from selfimprove.search.mcts.engine import MCTS, MCTSConfig, TreeEnv, adaptive_width, mix_value, run_mcts
from selfimprove.search.mcts.tree import (
    Node,
    Tree,
    backup,
    best_finished,
    most_visited_leaf,
    puct_score,
    select_child,
    select_leaf,
    tree_stats,
    uct_score,
)
from selfimprove.search.mcts.policy import PolicyEnv, mcts_search, mcts_trees, tree_results

__all__ = [
    "MCTS",
    "MCTSConfig",
    "Node",
    "PolicyEnv",
    "Tree",
    "TreeEnv",
    "adaptive_width",
    "backup",
    "best_finished",
    "mcts_search",
    "mcts_trees",
    "mix_value",
    "most_visited_leaf",
    "puct_score",
    "run_mcts",
    "select_child",
    "select_leaf",
    "tree_results",
    "tree_stats",
    "uct_score",
]
