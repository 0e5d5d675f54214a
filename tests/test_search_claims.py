"""The search studies' claims (bench/search_claims.py), checked by hand on made-up results: test-time
compute against its baselines at equal tokens, and search data before GRPO."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from search_claims import alphallm_claims, inference_compute_claims  # noqa: E402


def _row(strategy: str, setting: dict, per_seed: dict) -> dict:
    return {"strategy": strategy, "setting": setting,
            "accuracy": sum(a for a, _ in per_seed.values()) / len(per_seed), "tokens": sum(t for _, t in per_seed.values()) / len(per_seed),
            "per_seed": {s: {"accuracy": a, "tokens": t, "choice": {"0": "greedy {}"}} for s, (a, t) in per_seed.items()}}


def test_test_time_claims_by_hand(tmp_path: Path) -> None:
    rows = [
        _row("greedy", {}, {"0": (35.0, 16), "1": (36.0, 16)}),
        _row("eta-mcts", {"simulations": 4}, {"0": (60.0, 70), "1": (60.0, 70)}),  # not the planned point: ignored
        _row("eta-mcts", {"simulations": 16}, {"0": (38.0, 100), "1": (35.0, 80)}),
        _row("eta-mcts-tool", {"simulations": 16}, {"0": (45.0, 120), "1": (47.0, 121)}),
        _row("best_of_n-orm", {"n": 4}, {"0": (37.0, 64), "1": (38.0, 64)}),
        _row("best_of_n-orm", {"n": 16}, {"0": (36.0, 256), "1": (37.0, 256)}),
        _row("majority_vote", {"n": 4}, {"0": (34.0, 64), "1": (30.0, 64)}),
        _row("majority_vote", {"n": 16}, {"0": (38.0, 256), "1": (30.0, 256)}),
        _row("weighted_best_of_n-orm", {"n": 4}, {"0": (38.0, 64), "1": (38.0, 64), "2": (38.0, 64), "3": (38.0, 64)}),
        _row("weighted_best_of_n-orm", {"n": 16}, {"0": (42.0, 256), "1": (42.0, 256), "2": (42.0, 256), "3": (42.0, 256)}),
        _row("weighted_best_of_n-orm", {"n": 64}, {"2": (46.0, 1024), "3": (46.0, 1024)}),
        _row("compute-optimal", {"budget": 128}, {"0": (90.0, 100), "1": (90.0, 100)}),  # another budget: ignored
        # it may spend under its budget; seed 2 spent over it (compared where it spent); seed 3 past the baseline's
        # dearest point, seed 4 with no baseline at all (neither compared)
        _row("compute-optimal", {"budget": 256}, {"0": (40.0, 128), "1": (41.0, 50), "2": (39.0, 512), "3": (39.0, 2048),
                                                   "4": (39.0, 100)}),
    ]
    (tmp_path / "test_time.json").write_text(json.dumps({"rows": rows, "critics": {"orm": {"within_auroc": 0.761}}}))
    claims = {c["claim"]: c for c in inference_compute_claims(tmp_path, tmp_path)}
    greedy = claims["Test-time eta-MCTS with the learned critics beats greedy (test-time study)"]
    assert greedy["ours_mean"] == pytest.approx(1.0) and greedy["ours_se"] == pytest.approx(2.0)  # +3 and -1
    assert greedy["verdict"] == "reproduced in direction (within noise)" and "0.76" in greedy["why"]
    # best-of-N at eta-MCTS's tokens, linear in log-tokens: seed 0 at 100 of 64..256 is 0.3219 of the way
    # (37 -> 36.678), seed 1 at 80 is 0.1610 (38 -> 37.839): 38 - 36.678 = +1.322, 35 - 37.839 = -2.839
    bon = claims["eta-MCTS beats best-of-N by the ORM at equal tokens"]
    assert bon["ours_mean"] == pytest.approx(-0.76) and bon["seeds"] == 2 and bon["verdict"].startswith("not reproduced")
    # majority: seed 0 34 + 4 x 0.3219 = 35.288 -> +2.712; seed 1 flat 30 -> +5: mean 3.856
    assert claims["eta-MCTS beats majority vote at equal tokens"]["ours_mean"] == pytest.approx(3.86)
    tool = claims["A gold-free tool critic lifts eta-MCTS"]
    assert tool["ours_mean"] == pytest.approx(9.5) and tool["ours_se"] == pytest.approx(2.5)  # +7 and +12
    # compute-optimal at its budget of 256 tokens when it spent less, against weighted best-of-N at 256 (42): -2 and -1;
    # seed 2 spent 512, halfway in log-tokens from 256 (42) to 1024 (46): 44, so -5. Mean -2.667, s.e. 1.202
    optimal = claims["Compute-optimal allocation beats weighted best-of-N at the same token budget"]
    assert optimal["seeds"] == 3 and optimal["ours_mean"] == pytest.approx(-2.67) and optimal["ours_se"] == pytest.approx(1.2)
    assert "s2: 39.0 at 512 tokens vs weighted_best_of_n-orm 44.0 at 512" in optimal["measured"]
    assert "s4: 39.0 at 100 tokens, no weighted_best_of_n-orm for this seed: not compared" in optimal["measured"]
    assert "s1: 41.0 at 50 tokens vs weighted_best_of_n-orm 42.0 at 256" in optimal["measured"] and "bin 0: greedy" in optimal["measured"]
    assert "s3: 39.0 at 2048 tokens, outside weighted_best_of_n-orm's tokens: not compared" in optimal["measured"]
    # why: it spent (128 + 50 + 512 + 2048 + 100) / 5 = 567.6 tokens; weighted best-of-16 gains 42 - 35.5 = +6.5 over greedy
    assert "it spent 568 of its 256 tokens" in optimal["why"] and "gains +6.5 over greedy" in optimal["why"]


def test_test_time_claims_before_the_study_ran(tmp_path: Path) -> None:
    claims = inference_compute_claims(tmp_path, tmp_path)
    assert len(claims) == 5 and {c["verdict"] for c in claims} == {"not run"}


def test_search_data_before_grpo_against_grpo_at_the_last_round(tmp_path: Path) -> None:
    def row(arm: str, seed: int, rnd: int, greedy: float) -> dict:
        return {"arm": arm, "seed": seed, "round": rnd, "greedy": greedy, "search": greedy, "kept": 100, "imagined": 0, "tokens": 60000}

    rows = [row("mcts", s, 0, 0.35) for s in (0, 1)] + [row("mcts", s, 3, 0.36) for s in (0, 1)]
    rows += [row("grpo", 0, 3, 0.40), row("grpo", 1, 3, 0.41), row("mcts-then-grpo", 0, 3, 0.43), row("mcts-then-grpo", 1, 3, 0.40),
             row("mcts-then-grpo", 0, 2, 0.90)]  # an earlier round: not compared
    rows += [{**row("mcts-then-grpo", s, 1, 0.37), "kept": kept, "kept_precision": p} for s, kept, p in ((0, 200, 0.5), (1, 100, 0.4))]
    (tmp_path / "alphallm.json").write_text(json.dumps({"rows": rows}))
    claims = {c["claim"]: c for c in alphallm_claims(tmp_path, tmp_path)}
    then = claims["Search-data SFT before GRPO beats GRPO alone at the same total tokens"]
    assert then["ours_mean"] == pytest.approx(1.0) and then["ours_se"] == pytest.approx(2.0) and then["seeds"] == 2  # +3 and -1
    assert "s0: search-data SFT then GRPO 43.0, GRPO 40.0" in then["measured"]
    # round 1 of the arm: (200 + 100) / 2 paths; right, weighted by paths: (200 x 0.5 + 100 x 0.4) / 300 = 46.7%
    assert "SFT on 150 kept paths, 47% of them right" in then["why"]


def test_the_data_claim_says_what_each_arm_spent_and_the_search_claim_its_own_figures(tmp_path: Path) -> None:
    def row(arm: str, seed: int, rnd: int, greedy: float, search: float, tokens: int) -> dict:
        return {"arm": arm, "seed": seed, "round": rnd, "greedy": greedy, "search": search, "kept": 10, "imagined": 0, "tokens": tokens}

    rows = [row(a, s, 0, 0.35, 0.36, 0) for a in ("mcts", "rft") for s in (0, 1)]
    # eta-MCTS spends 30k + 20k (seed 0) and 40k + 30k (seed 1): 60k a seed on average; RFT 60k a round, 120k
    rows += [row("mcts", 0, 1, 0.37, 0.36, 30000), row("mcts", 0, 2, 0.38, 0.36, 20000),
             row("mcts", 1, 1, 0.37, 0.40, 40000), row("mcts", 1, 2, 0.36, 0.37, 30000)]
    rows += [row("rft", s, r, 0.34, 0.33, 60000) for s in (0, 1) for r in (1, 2)]
    (tmp_path / "alphallm.json").write_text(json.dumps({"rows": rows, "critics": {"orm": {"after": {"within_auroc": 0.9}, "held_out_examples": 40}}}))
    claims = {c["claim"]: c for c in alphallm_claims(tmp_path, tmp_path)}
    data = claims["eta-MCTS data beats sampled data (RFT) at the same token budget"]
    assert data["ours_mean"] == pytest.approx(3.0)  # 38 - 34 and 36 - 34
    assert "eta-MCTS 60,000, RFT 120,000" in data["measured"]
    search = claims["Test-time eta-MCTS beats greedy"]
    assert "eta-MCTS minus greedy with that round's critics: -2.0, +1.0" in search["measured"]  # 36 - 38, 37 - 36
    assert search["ours_mean"] == pytest.approx(-0.5) and "40 examples: orm within-problem AUROC 0.90" in search["why"]


def test_critic_claims_read_the_best_arm_of_each_kind(tmp_path: Path) -> None:
    from search_claims import critic_claims

    def arm(kind: str, name: str, auroc: float, lever: str) -> dict:
        return {"kind": kind, "arm": name, "within_auroc": auroc, "lever": lever}

    arms = [arm("orm", "orm-a", 0.70, "labels: 512 problems"), arm("orm", "orm-b", 0.76, "labels: 16384 problems"),
            arm("value", "value-a", 0.66, "labels: 4096 problems"), arm("prm", "prm-a", 0.68, "label smoothing a=1 (8 chunks)")]
    bon = {"by_critic": [["orm-a", {"1": 0.4, "4": 0.6, "16": 0.5, "64": 0.2}], ["orm-b", {"1": 0.464, "4": 0.514, "16": 0.484, "64": 0.40}]],
           "majority_vote": [["1", 0.464], ["4", 0.511]]}
    (tmp_path / "critic_levers.json").write_text(json.dumps({"arms": arms, "best_of_n": bon, "labels": {"ceiling": {"value": 1.0, "prm": 1.0}}}))
    target, rise = critic_claims(tmp_path, tmp_path)
    assert target["ours_mean"] == pytest.approx(-9.0) and target["seeds"] == 1 and target["verdict"] == "not reproduced"  # 76 - 85
    assert "orm: 0.760 (labels: 16384 problems)" in target["measured"] and "value: 0.660" in target["measured"]
    assert "value 1.000, PRM 1.000" in target["why"]
    assert rise["ours_mean"] == pytest.approx(-11.4)  # the best ORM's 40.0 at N = 64 minus 51.4 at N = 4
    assert "orm-b at N = 1 / 4 / 16 / 64: 46.4 / 51.4 / 48.4 / 40.0; majority vote 46.4 / 51.1" in rise["measured"]
    assert {c["verdict"] for c in critic_claims(tmp_path / "none", tmp_path / "none")} == {"not run"}


def test_lever_moves_are_read_from_the_arms() -> None:
    """The 'what moved it' sentence comes from the arms, so a rerun of critic_levers keeps it true; the lever
    names are the report's own (`critic_levers_report.lever`), so a change in their wording fails here."""
    from types import SimpleNamespace

    from critic_levers_report import lever
    from search_claims import _lever_moves

    def arm(auroc: float, tokens: int, chunks: int, objective: str = "pointwise", seed: int = 0, trunk: str = "policy") -> dict:
        r = {"chunks": chunks, "objective": objective, "seed": seed, "trunk": trunk, "smoothing": 0.0}
        name = f"orm-c{chunks}-{objective}{'-scratch' if trunk == 'scratch' else ''}-s{seed}"
        return {"kind": "orm", "arm": name, "within_auroc": auroc, "lever": lever(r, SimpleNamespace(chunk_problems=512)), "label_tokens": tokens}

    arms = [arm(0.55, 100, 1), arm(0.70, 800, 8),
            arm(0.76, 3200, 32),  # two doublings from 800: (0.76 - 0.70) / 2
            arm(0.66, 800, 8, "pairwise"),  # 0.04 below the pointwise arm on its labels
            arm(0.72, 800, 8, "mixed"), arm(0.75, 800, 8, "mixed", seed=1),
            arm(0.50, 800, 8, trunk="scratch"),  # the control: not a lever
            {"kind": "prm", "arm": "prm-c8-mixed-s0", "within_auroc": 0.99, "lever": "mixed objective (8 chunks)", "label_tokens": 800}]
    text = _lever_moves(arms)
    assert "+0.030 AUROC a doubling (labels: 4096 problems to 16384 problems)" in text
    assert "moved it 0.040 at most (pairwise objective (8 chunks))" in text
    assert "one arm's seeds spread 0.030 (2 seeds of orm-c8-mixed)" in text
    assert _lever_moves([]) == ""
