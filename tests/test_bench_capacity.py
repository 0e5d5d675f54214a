"""bench/capacity.py's table and the reproduce claims read from it, checked by hand on made-up runs."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from helpers import write_json

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

import capacity  # noqa: E402
from reproduce_claims import capacity_claims  # noqa: E402


def test_collect_and_claims_by_hand(tmp_path: Path) -> None:
    args = capacity.parse_args(["report", "--run-dir", str(tmp_path / "runs"), "--sizes", "default", "large"])
    for size, accs in (("default", [(0.30, 0.36), (0.32, 0.36)]), ("large", [(0.40, 0.50), (0.42, 0.48)])):
        for seed, (sft, rl) in enumerate(accs):
            write_json(args.run_dir / size / "demo" / f"seed{seed}" / "summary.json",
                       {"seed": seed, "sft_accuracy": sft, "rl_accuracy": rl, "sft_seconds": 600.0 * (seed + 1), "rl_seconds": 1200.0})

    def arm(deltas: list[float]) -> dict:
        return {"per_seed": [{"seed": s, "delta": d, "acc_t1": 0.4} for s, d in enumerate(deltas)]}

    write_json(args.run_dir / "large" / "selfcorrect" / "summary.json",
           {"methods": {"base": arm([-0.05, -0.03]), "pair_sft": arm([0.06, 0.04]), "score": arm([0.02, 0.05])}})
    (args.run_dir / "logs").mkdir(parents=True)
    (args.run_dir / "logs" / "large-demo-seed0.DONE").write_text("60\n")  # a resumed demo's last part: not its time
    (args.run_dir / "logs" / "large-selfcorrect.DONE").write_text("1500\n")
    rows = capacity.collect(args)
    default, large = rows
    assert default["demo"]["gain"] == {"mean": 5.0, "se": 1.0, "seeds": 2}  # +6 and +4 points
    assert default["score"]["delta"]["mean"] is None  # its self-correction has not run
    assert large["demo"]["gain"]["mean"] == pytest.approx(8.0) and large["demo"]["gain"]["se"] == pytest.approx(2.0)  # +10, +6
    assert large["score_minus_pair_sft"]["mean"] == pytest.approx(-1.5)  # -4 and +1 points
    assert large["minutes"] == {"demo-seed0": 30.0, "demo-seed1": 40.0, "selfcorrect": 25.0}  # (600 + 1200) / 60, (1200 + 1200) / 60
    assert default["minutes"] == {"demo-seed0": 30.0, "demo-seed1": 40.0}
    write_json(tmp_path / "results" / "capacity.json", {"rows": rows})
    claims = capacity_claims(tmp_path, tmp_path / "results")
    gain, delta, versus = claims
    assert "large" in gain["claim"] and gain["ours_mean"] == pytest.approx(8.0) and gain["seeds"] == 2
    assert "default (2.65M) +5.0, large (25.8M) +8.0" in gain["measured"]
    assert delta["ours_mean"] == pytest.approx(3.5) and delta["verdict"] == "reproduced in direction"  # +2, +5
    assert versus["ours_mean"] == pytest.approx(-1.5) and versus["verdict"] == "not reproduced (within noise)"
    assert "Pair-SFT's Delta by size: large (25.8M) +5.0" in versus["why"]


def test_claims_before_it_ran(tmp_path: Path) -> None:
    assert {c["verdict"] for c in capacity_claims(tmp_path, tmp_path)} == {"not run"}


def test_processes_share_one_queue_dearest_first_skipping_done_and_held_commands(tmp_path: Path, monkeypatch) -> None:
    args = capacity.parse_args(["run", "--run-dir", str(tmp_path)])
    # costs: demos 4.4 (large), 2 (medium), 1 (default), 2 seeds each; a size's self-correction the same as its demo
    order = [n for n, _, _ in capacity.queue(args)]
    assert order == ["large-demo-seed0", "large-demo-seed1", "large-selfcorrect", "medium-demo-seed0", "medium-demo-seed1",
                     "medium-selfcorrect", "default-demo-seed0", "default-demo-seed1", "default-selfcorrect"]
    ran: list[str] = []
    monkeypatch.setattr(capacity, "run_logged", lambda command, log_file, env, cwd: ran.append(log_file.stem))
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "large-demo-seed0.DONE").write_text("60\n")  # finished before
    with capacity.claim(tmp_path / "logs" / "large-demo-seed1.claim") as held:  # another live process runs it
        assert held
        assert capacity.run(args) == order[2:] == ran
    assert (tmp_path / "logs" / "medium-selfcorrect.DONE").is_file()
    assert capacity.run(args) == ["large-demo-seed1"]  # its holder is gone: the next process takes it up
    compare = " ".join(map(str, dict((n, c) for n, c, _ in capacity.commands(capacity.parse_args(["run"])))["large-selfcorrect"]))
    assert "seeds=[0, 1]" in compare and "base.init.preset=large" in compare and "eval.split=train" in compare
    score = next(a for a in capacity.recipe_arms() if isinstance(a, dict) and a["name"] == "score")
    assert score["stages"][0]["budget"] == 0.5  # the recipe's SCoRe, not the built-in arm (Stage I on 30%)


def test_each_claim_reads_the_largest_size_that_has_its_figures(tmp_path: Path) -> None:
    def stat(values: list[float]) -> dict:
        return {"mean": sum(values) / len(values) if values else None}

    def row(size: str, params: str, gains: list[float], deltas: list[float]) -> dict:
        per = [{"seed": s, "delta": d} for s, d in enumerate(deltas)]
        return {"size": size, "parameters": params,
                "demo": {"per_seed": [{"seed": s, "sft": 30.0, "rl": 30.0 + g} for s, g in enumerate(gains)], "gain": stat(gains)},
                "base": {"delta": stat(deltas), "per_seed": per}, "pair_sft": {"delta": stat([d - 1 for d in deltas]),
                                                                              "per_seed": [{**p, "delta": p["delta"] - 1} for p in per]},
                "score": {"delta": stat(deltas), "per_seed": per}, "score_minus_pair_sft": stat([1.0] * len(deltas))}

    # the largest size's self-correction has not run yet: its claims read the medium size
    write_json(tmp_path / "capacity.json", {"rows": [row("medium", "10.7M", [2.0, 4.0], [1.0, 3.0]), row("large", "25.8M", [6.0, 8.0], [])]})
    gain, delta, versus = capacity_claims(tmp_path, tmp_path)
    assert "(large, 25.8M parameters)" in gain["claim"] and gain["ours_mean"] == pytest.approx(7.0)
    assert "(medium, 10.7M parameters)" in delta["claim"] and delta["ours_mean"] == pytest.approx(2.0)
    assert "(medium, 10.7M parameters)" in versus["claim"] and versus["ours_mean"] == pytest.approx(1.0)
