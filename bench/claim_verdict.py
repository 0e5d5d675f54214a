"""A seed-paper claim's verdict from one measured number per seed, shared by every study's claims
(`reproduce_claims.py`, `search_claims.py`).

A claim's "ours" is one number per seed (a difference in points, unless said); the verdict is
"reproduced in direction" when its mean has the paper's sign, "not reproduced" otherwise, "not run" when
the study has no results yet; "within noise" is added when the mean is within one standard error of 0.
The `measured` field holds the figures behind each verdict (the measured reason for a "not").
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any

from common import stderr  # noqa: E402  (bench/common.py)

PAPER = {
    "demo": "RL on a verifier's reward improves on SFT (DeepSeekMath / R1: GRPO after SFT)",
    "score_delta": "+4.4 (MATH: 60.0 -> 64.4)",
    "score_vs_baselines": "+2.6 over Pair-SFT (1.8), +4.0 over STaR (0.4)",
    "stage1": "+2.2 (4.4 vs 2.2 without Stage I)",
    "shaping": "+1.8 (4.4 vs 2.6 without shaping)",
    "single_turn": "-2.4 (single-turn RL's Delta)",
    "rrr_countdown": "+34.7 after retry (Countdown)",
    "rrr_function": "+18.1 after retry (function calling; APIGen 32.6 -> 48.6)",
    "forgetting": "< 1 point of forgetting",
    "search": "eta-MCTS 92.0 vs greedy 73.7 (GSM8K, 70B)",
    "r3_rl": "+4.1 over RL (Llama2-7B, 8 tasks)",
    "r3_sft": "+5.4 over SFT",
    "alpha_rounds": "+15.9 (greedy 57.8 -> 73.7 over 2 rounds)",
    "alpha_data": "search data better than sampled data (no single figure)",
    "alpha_search": "+18.3 (eta-MCTS 92.0 vs greedy 73.7 after the rounds)",
    "tt_bon": "eta-MCTS 87.0 at 55 rollouts vs ORM reranking 87.7 at 229 (GSM8K): as good at a quarter of the budget",
    "tt_vote": "eta-MCTS 87.0 at 55 rollouts vs self-consistency 75.4 at 229 (GSM8K)",
    "tool_critic": "+6.6 (MATH: eta-MCTS 38.8 without the ORM's tool, 45.4 with it)",
    "compute_optimal": "Snell et al. 2024: compute-optimal allocation beats best-of-N (weighted) at equal compute, "
                       "up to 4x less compute for the same accuracy (PaLM 2-S*, MATH)",
    "alpha_then_grpo": "no paper figure: issue 26 asks whether search-data SFT before GRPO beats GRPO alone",
    "auroc_target": "no paper figure: issue 26's target, within-problem AUROC >= 0.85 for the value, PRM and ORM",
    "bon_rises": "best-of-N by a learned ORM rises with N (AlphaLLM's ORM reranking; Snell et al. 2024's verifier curves)",
    "score_after_pair": "no paper figure for this order (SCoRe beats Pair-SFT by +2.6 from one base): issue 26 asks "
                        "whether RL adds to demonstrated corrections",
}


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def make_claim(name: str, key: str, values: list[float], sign: int, measured: str, why: str = "", planned: int = 0) -> dict[str, Any]:
    """One claim; `why` (the measured reason) is kept when the claim did not hold; fewer seeds than
    `planned` mark the verdict partial (a run still under way)."""
    claim = _verdict(name, key, values, sign, measured, why)
    if values and len(values) < planned:
        claim["verdict"] += f" (partial: {len(values)} of {planned} seeds)"
    return claim


def _verdict(name: str, key: str, values: list[float], sign: int, measured: str, why: str) -> dict[str, Any]:
    if not values:
        return {"claim": name, "paper": PAPER[key], "ours_mean": None, "ours_se": None, "seeds": 0, "verdict": "not run",
                "measured": measured, "why": ""}
    mean = statistics.fmean(values)
    se = stderr(values)
    verdict = "reproduced in direction" if mean * sign > 0 else "not reproduced"
    if not math.isnan(se) and abs(mean) <= se:
        verdict += " (within noise)"
    held = verdict.startswith("reproduced") and "within noise" not in verdict
    return {"claim": name, "paper": PAPER[key], "ours_mean": round(mean, 2), "ours_se": None if math.isnan(se) else round(se, 2),
            "seeds": len(values), "verdict": verdict, "measured": measured, "why": "" if held else why}


def pts(x: float) -> float:
    return 100.0 * x
