"""`selfimprove reproduce`: claims checked by hand on made-up results, and the driver's resume and report
on its quick preset (one study)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import write_json

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from reproduce_claims import wall_minutes, write_report  # noqa: E402


def test_claims_by_hand(tmp_path: Path) -> None:
    root, results = tmp_path / "runs", tmp_path / "results"
    for seed, (sft, rl) in enumerate([(0.30, 0.40), (0.32, 0.38)]):
        write_json(root / "demo" / f"seed{seed}" / "summary.json", {"seed": seed, "sft_accuracy": sft, "rl_accuracy": rl})

    def row(seed: int, delta: float) -> dict:
        return {"seed": seed, "delta": delta, "delta_i_to_c": max(delta, 0), "delta_c_to_i": max(-delta, 0)}

    write_json(root / "selfcorrect" / "summary.json", {"methods": {
        "score": {"per_seed": [row(0, 0.02), row(1, -0.01)]}, "star": {"per_seed": [row(0, 0.01), row(1, 0.0)]},
        "pair_sft": {"per_seed": [row(0, 0.03), row(1, 0.01)]}, "score_single_turn": {"per_seed": [row(0, -0.1), row(1, -0.2)]}}})
    write_json(results / "r3.json", {"rows": [{"task": "chain", "seed": s, "arm": a, "accuracy": acc}
                                          for s, accs in enumerate([(0.5, 0.4, 0.3), (0.45, 0.5, 0.3)])
                                          for a, acc in zip(("r3-mixed", "rl", "sft"), accs)]})
    for seed, (first, retry) in enumerate([(0.40, 0.47), (0.385, 0.455), (0.39, 0.46)]):  # before 0.40 / 0.45 every seed
        write_json(root / "rrr-countdown" / "rrr-tuned" / f"seed{seed}" / "summary.json",
               {"rrr_before": {"first_accuracy": 0.40, "retry_accuracy": 0.45}, "rrr_after": {"first_accuracy": first, "retry_accuracy": retry}})
    for seed, (greedy, eta4, eta16) in enumerate([(0.30, 0.40, 0.33), (0.32, 0.30, 0.36)]):
        points = [{"search": "greedy", "setting": {}, "accuracy": greedy, "mean_tokens": 16},
                  {"search": "eta-mcts", "setting": {"simulations": 4}, "accuracy": eta4, "mean_tokens": 70},
                  {"search": "eta-mcts", "setting": {"simulations": 16}, "accuracy": eta16, "mean_tokens": 80}]
        write_json(results / ("search_budget.json" if seed == 0 else f"search_budget_seed{seed}.json"), {"args": {"seed": seed}, "points": points})
    claims = {c["claim"]: c for c in write_report(root, results, tmp_path / "R.md", quick=True,
                                                  studies=["demo", "selfcorrect", "rrr-countdown", "search", "r3", "alphallm"],
                                                  log_dir=tmp_path)}
    search = claims["eta-MCTS beats greedy at its budget (Countdown)"]
    # the largest simulation count, not the best point on test: +3 and +4 points (not +10 at 4 simulations)
    assert search["ours_mean"] == pytest.approx(3.5) and search["ours_se"] == pytest.approx(0.5) and search["seeds"] == 2
    retry = claims["RRR with the settings chosen on validation raises after-retry accuracy (countdown)"]
    assert "on validation" not in retry["measured"]  # no over-seeds check on validation in these results
    # after-retry gains +2.0, +0.5, +1.0 points: mean 1.1667, sample std 0.7638, s.e. 0.4410
    assert retry["ours_mean"] == pytest.approx(1.17) and retry["ours_se"] == pytest.approx(0.44) and retry["seeds"] == 3
    kept = claims["RRR with the settings chosen on validation keeps the first attempt within 1 point (countdown)"]
    # first-attempt changes 0, -1.5, -1.0 points: mean -0.83 (within 1 point: the sign test is on change + 1 = +0.17)
    assert kept["ours_mean"] == pytest.approx(-0.83) and kept["verdict"].startswith("reproduced in direction")
    assert claims["RRR raises after-retry accuracy (countdown)"]["verdict"] == "not run"
    demo = claims["GRPO after SFT beats SFT alone (points of held-out accuracy)"]
    assert demo["ours_mean"] == pytest.approx(8.0) and demo["ours_se"] == pytest.approx(2.0)  # gains 10 and 6 points
    assert demo["verdict"] == "reproduced in direction" and demo["seeds"] == 2
    score = claims["SCoRe's Delta(t1, t2) > 0 (Countdown, step format)"]
    assert score["ours_mean"] == pytest.approx(0.5) and score["verdict"] == "reproduced in direction (within noise)"
    vs = claims["SCoRe's Delta above the best of STaR and Pair-SFT"]
    assert vs["ours_mean"] == pytest.approx(-1.5) and vs["verdict"].startswith("not reproduced")  # -1 and -2 points
    assert "Pair-SFT" in vs["why"] and "wrong->right 2.0" in vs["why"]  # the measured reason; Pair-SFT's i->c: 3 and 1 points
    assert demo["why"] == ""  # a claim that held needs no reason
    assert claims["Single-turn RL's Delta is negative"]["verdict"] == "reproduced in direction"
    r3 = claims["R^3 (mixed curriculum) beats RL at the same tokens (chain)"]
    assert r3["ours_mean"] == pytest.approx(2.5) and r3["seeds"] == 2  # +10 and -5 points
    assert r3["measured"].endswith("(a run from before issue 26 fixed R^3's judgement)")  # its JSON does not say how it judged
    assert claims["Test-time eta-MCTS beats greedy"]["verdict"] == "not run"
    table = (tmp_path / "R.md").read_text()
    assert "| GRPO after SFT beats SFT alone (points of held-out accuracy) |" in table and "+8.0 ± 2.0" in table
    assert json.loads((results / "reproduction.json").read_text())["claims"][0]["claim"] == demo["claim"]
    write_json(root / "rrr-countdown" / "rrr" / "seed0" / "summary.json",  # one of the 3 planned seeds so far
           {"rrr_before": {"first_accuracy": 0.40, "retry_accuracy": 0.45}, "rrr_after": {"first_accuracy": 0.40, "retry_accuracy": 0.47}})
    again = {c["claim"]: c for c in write_report(root, results, tmp_path / "R.md", quick=False, studies=["rrr-countdown"], log_dir=tmp_path)}
    assert again["RRR raises after-retry accuracy (countdown)"]["verdict"] == "reproduced in direction (partial: 1 of 3 seeds)"
    quick = {c["claim"]: c for c in write_report(root, results, tmp_path / "R.md", quick=True, studies=["rrr-countdown"], log_dir=tmp_path)}
    assert quick["RRR raises after-retry accuracy (countdown)"]["verdict"] == "reproduced in direction"  # the quick preset plans 1 seed


def test_rrr_claims_show_the_chosen_settings_over_seeds_on_validation(tmp_path: Path) -> None:
    root, results = tmp_path / "runs", tmp_path / "results"
    write_json(root / "rrr-countdown" / "rrr-tuned" / "seed0" / "summary.json",
           {"rrr_before": {"first_accuracy": 0.40, "retry_accuracy": 0.45}, "rrr_after": {"first_accuracy": 0.41, "retry_accuracy": 0.44}})
    write_json(results / "selfcorrect_tune.json", {"rrr-seeds": {"countdown": {
        "per_seed": [{}, {}, {}], "first_change": 4.1, "first_change_se": 0.66, "retry_change": 0.33, "retry_change_se": 0.7}}})
    claims = {c["claim"]: c for c in write_report(root, results, tmp_path / "R.md", quick=True, studies=["rrr-countdown"], log_dir=tmp_path)}
    measured = claims["RRR with the settings chosen on validation raises after-retry accuracy (countdown)"]["measured"]
    assert measured == ("first 40.0 -> 41.0, after retry 45.0 -> 44.0; on validation (3 seeds, after the choice): "
                        "first +4.1 ± 0.7, after retry +0.3 ± 0.7")
    assert "on validation" not in claims["RRR raises after-retry accuracy (countdown)"]["measured"]  # the paper's settings: none


def test_scores_reason_cites_the_longer_budget_study_on_validation(tmp_path: Path) -> None:
    root, results = tmp_path / "runs", tmp_path / "results"
    row = {"seed": 0, "delta": -0.02, "delta_i_to_c": 0.05, "delta_c_to_i": 0.07}
    write_json(root / "selfcorrect" / "summary.json", {"methods": {"score": {"per_seed": [row]}, "base": {"per_seed": [row]}}})

    def why() -> str:
        claims = write_report(root, results, tmp_path / "R.md", quick=True, studies=["selfcorrect"], log_dir=tmp_path)
        return next(c["why"] for c in claims if c["claim"].startswith("SCoRe's Delta(t1, t2)"))

    assert "validation" not in why()  # the budget study has not run: nothing to cite
    budget = {"budget_tokens": 1_000_000, "methods": {"pair_sft": {"delta": 0.105}, "score-stage1-0.5": {"delta": -0.03}}}
    write_json(results / "selfcorrect_tune.json", {"budget": {"summary": budget}})
    assert why().endswith("; more budget did not change it: at 1,000,000 sampled tokens on validation (seed 0) "
                          "SCoRe's Delta was -3.0, Pair-SFT's +10.5")
    budget["methods"]["score-stage1-0.5"]["delta"] = 0.01
    write_json(results / "selfcorrect_tune.json", {"budget": {"summary": budget}})
    assert "more budget moved it past 0 on validation" in why() and "SCoRe's Delta was +1.0" in why()


def test_the_driver_runs_resumes_and_reports_on_its_quick_preset(tmp_path: Path) -> None:
    command = [sys.executable, str(ROOT / "bench" / "reproduce.py"), "--quick", "--only", "demo", "--run-dir", str(tmp_path)]
    first = subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert first.returncode == 0, first.stdout + first.stderr
    assert (tmp_path / "logs" / "demo.DONE").is_file() and (tmp_path / "demo" / "seed0" / "summary.json").is_file()
    report = (tmp_path / "REPRODUCTION.md").read_text()
    assert "GRPO after SFT beats SFT alone" in report and "quick smoke run" in report
    again = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert again.returncode == 0 and "done  demo (0 min)" in again.stdout  # skipped: marked DONE
    assert json.loads((tmp_path / "results" / "reproduction.json").read_text())["quick"] is True


def test_wall_time_is_the_union_of_the_invocations_spans(tmp_path: Path) -> None:
    (tmp_path / "spans").mkdir()
    for i, (start, stop) in enumerate([(0, 600), (300, 900), (2000, 2600)]):  # two overlap, one a later session
        (tmp_path / "spans" / f"{i}").write_text(f"{start} {stop}\n")
    assert wall_minutes(tmp_path) == 25.0  # 0..900 and 2000..2600: 1500 s


def test_a_studys_minutes_are_the_union_of_its_own_spans_over_invocations(tmp_path: Path) -> None:
    study = tmp_path / "spans" / "rrr"
    study.mkdir(parents=True)
    for i, (start, stop) in enumerate([(0, 1200), (5000, 5600)]):  # stopped, then resumed in a later invocation
        (study / f"{i}").write_text(f"{start} {stop}\n")
    (tmp_path / "spans" / "whole-run").write_text("0 6000\n")
    assert wall_minutes(tmp_path, "rrr") == 30.0  # 1200 + 600 s; the run's own span is not the study's
    assert wall_minutes(tmp_path) == 100.0  # the run's union ignores the per-study folders
    (tmp_path / "rrr.DONE").write_text("600\n")  # the last invocation's 10 minutes
    write_report(tmp_path, tmp_path / "results", tmp_path / "R.md", quick=True, studies=[], log_dir=tmp_path)
    assert "each study's own minutes: rrr 30 " in (tmp_path / "R.md").read_text()


def test_score_from_pair_sft_is_judged_against_pair_sft_on_the_whole_budget(tmp_path: Path) -> None:
    def row(seed: int, delta: float, i_to_c: float, c_to_i: float) -> dict:
        return {"seed": seed, "delta": delta, "delta_i_to_c": i_to_c, "delta_c_to_i": c_to_i}

    write_json(tmp_path / "selfcorrect" / "summary.json", {"methods": {
        "pair_sft": {"per_seed": [row(0, 0.06, 0.08, 0.02), row(1, 0.05, 0.07, 0.02), row(2, 0.07, 0.08, 0.01)]},
        "pair_sft_half": {"per_seed": [row(0, 0.04, 0.05, 0.01)]},
        "pair_sft_then_score": {"per_seed": [row(0, 0.08, 0.09, 0.01), row(1, 0.04, 0.06, 0.02)]}}})  # seed 2 not run yet
    claims = {c["claim"]: c for c in write_report(tmp_path, tmp_path / "results", tmp_path / "R.md", quick=False,
                                                  studies=["selfcorrect"], log_dir=tmp_path)}
    claim = claims["SCoRe from the Pair-SFT model beats Pair-SFT alone (Delta, same tokens)"]
    assert claim["ours_mean"] == pytest.approx(0.5) and claim["ours_se"] == pytest.approx(1.5) and claim["seeds"] == 2  # +2, -1
    assert claim["verdict"] == "reproduced in direction (within noise)"
    assert "pair_sft_half s0 Delta +4.0" in claim["measured"] and "wrong->right 7.5" in claim["why"]


def test_a_claim_not_run_here_keeps_the_previous_reports_figures_marked(tmp_path: Path) -> None:
    root, results = tmp_path / "runs", tmp_path / "results"
    for seed, (sft, rl) in enumerate([(0.30, 0.40), (0.32, 0.38)]):
        write_json(root / "demo" / f"seed{seed}" / "summary.json", {"seed": seed, "sft_accuracy": sft, "rl_accuracy": rl})
    first = write_report(root, results, tmp_path / "R.md", quick=False, studies=["demo", "search"], log_dir=tmp_path)
    assert first[0]["ours_mean"] == pytest.approx(8.0) and "carried_from" not in first[0] and first[1]["verdict"] == "not run"
    stamp = json.loads((results / "reproduction.json").read_text())["generated"]
    for path in (root / "demo").glob("seed*/summary.json"):
        path.unlink()  # another machine: the demo's runs are gone
    again = write_report(root, results, tmp_path / "R.md", quick=False, studies=["demo", "search"], log_dir=tmp_path)
    assert again[0]["ours_mean"] == pytest.approx(8.0) and again[0]["carried_from"] == stamp
    assert again[1]["verdict"] == "not run" and "carried_from" not in again[1]  # nothing measured to carry
    table = (tmp_path / "R.md").read_text()
    assert "| GRPO after SFT beats SFT alone (points of held-out accuracy) † |" in table and f"† Carried from the committed report of {stamp}" in table
    write_json(root / "demo" / "seed0" / "summary.json", {"seed": 0, "sft_accuracy": 0.30, "rl_accuracy": 0.31})
    measured = write_report(root, results, tmp_path / "R.md", quick=False, studies=["demo"], log_dir=tmp_path)
    assert measured[0]["ours_mean"] == pytest.approx(1.0) and "carried_from" not in measured[0]  # measured here: replaces it
