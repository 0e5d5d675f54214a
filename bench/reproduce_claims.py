"""The seed papers' claims, checked against what `bench/reproduce.py` measured: `REPRODUCTION.md` and
`reproduction.json` = {"claims": [{"claim", "paper", "ours_mean", "ours_se", "seeds", "verdict", ...}]}.
Verdicts: `claim_verdict.py`; the search studies' claims (search, AlphaLLM, test-time): `search_claims.py`.
"""

from __future__ import annotations

import datetime
import json
import statistics
from pathlib import Path
from typing import Any, Callable

from claim_verdict import make_claim, pts, read_json  # noqa: E402  (bench/claim_verdict.py)
from common import repo_relative, repo_relative_paths, union_minutes  # noqa: E402  (bench/common.py)
from search_claims import alphallm_claims, critic_claims, search_claims, inference_compute_claims  # noqa: E402  (bench/search_claims.py)


def demo_claims(root: Path, results: Path) -> list[dict[str, Any]]:
    rows = [s for s in (read_json(p) for p in sorted((root / "demo").glob("seed*/summary.json"))) if s]
    gains = [pts(s["rl_accuracy"] - s["sft_accuracy"]) for s in rows]
    measured = "; ".join(f"seed {s['seed']}: SFT {pts(s['sft_accuracy']):.1f} -> RL {pts(s['rl_accuracy']):.1f}" for s in rows)
    return [make_claim("GRPO after SFT beats SFT alone (points of held-out accuracy)", "demo", gains, +1, measured)]


def _tuning(results: Path) -> dict[str, Any]:
    """What bench/selfcorrect_tune.py measured on validation (empty when it has not run)."""
    return read_json(results / "selfcorrect_tune.json") or {}


def _longer_budget(results: Path) -> str:
    """What the validation study at a larger budget (bench/selfcorrect_tune.py --only budget) measured, if it ran."""
    tune = _tuning(results)
    if "budget" not in tune:
        return ""
    methods = tune["budget"]["summary"]["methods"]
    score = next((m for name, m in methods.items() if name.startswith("score")), None)
    if score is None or "pair_sft" not in methods:
        return ""
    lead = "more budget did not change it" if score["delta"] <= 0 else "more budget moved it past 0 on validation"
    return (f"; {lead}: at {tune['budget']['summary']['budget_tokens']:,} sampled tokens on validation (seed 0) SCoRe's "
            f"Delta was {pts(score['delta']):+.1f}, Pair-SFT's {pts(methods['pair_sft']['delta']):+.1f}")


def selfcorrect_claims(root: Path, results: Path) -> list[dict[str, Any]]:
    summary = read_json(root / "selfcorrect" / "summary.json") or {"methods": {}}
    per = {name: {r["seed"]: r for r in m.get("per_seed", [])} for name, m in summary["methods"].items()}

    def deltas(arm: str) -> dict[int, float]:
        return {s: pts(r["delta"]) for s, r in per.get(arm, {}).items()}

    def diff(a: str, b: Callable[[int], float | None]) -> list[float]:
        out = []
        for s, d in deltas(a).items():
            other = b(s)
            if other is not None:
                out.append(d - other)
        return out

    def show(arm: str) -> str:
        rows = per.get(arm, {}).values()
        return ", ".join(f"{arm} s{r['seed']} Delta {pts(r['delta']):+.1f} (i->c {pts(r['delta_i_to_c']):.1f}, "
                         f"c->i {pts(r['delta_c_to_i']):.1f})" for r in rows)

    def mean_of(arm: str, field: str) -> float:
        rows = list(per.get(arm, {}).values())
        return statistics.fmean(pts(r[field]) for r in rows) if rows else float("nan")

    base_d, score_d = mean_of("base", "delta"), mean_of("score", "delta")
    why_delta = (f"the untrained base already loses on a second attempt (Delta {base_d:+.1f}: right->wrong "
                 f"{mean_of('base', 'delta_c_to_i'):.1f} > wrong->right {mean_of('base', 'delta_i_to_c'):.1f}); SCoRe moved "
                 f"Delta by {score_d - base_d:+.1f} points, not past 0 (300k sampled tokens, a 2.65M-parameter model)"
                 f"{_longer_budget(results)}")
    why_baselines = (f"Pair-SFT imitates demonstrated fixes (wrong->right {mean_of('pair_sft', 'delta_i_to_c'):.1f}, Delta "
                     f"{mean_of('pair_sft', 'delta'):+.1f}); SCoRe's RL on its own second attempts found fewer fixes "
                     f"(wrong->right {mean_of('score', 'delta_i_to_c'):.1f})")
    def best_baseline(seed: int) -> float | None:
        """Both baselines or none: a seed without one of them would be compared against the other alone."""
        star, pair = deltas("star"), deltas("pair_sft")
        return max(star[seed], pair[seed]) if seed in star and seed in pair else None

    return [
        make_claim("SCoRe's Delta(t1, t2) > 0 (Countdown, step format)", "score_delta", list(deltas("score").values()), +1,
               "; ".join(filter(None, [show("score"), show("base")])), why_delta),
        make_claim("SCoRe's Delta above the best of STaR and Pair-SFT", "score_vs_baselines", diff("score", best_baseline), +1,
               "; ".join(filter(None, [show("star"), show("pair_sft")])), why_baselines),
        make_claim("Stage I helps (SCoRe's Delta minus no-Stage-I's)", "stage1", diff("score", lambda s: deltas("score_no_stage1").get(s)), +1,
               show("score_no_stage1")),
        make_claim("Reward shaping helps (SCoRe's Delta minus no-shaping's)", "shaping",
               diff("score", lambda s: deltas("score_no_shaping").get(s)), +1, show("score_no_shaping")),
        make_claim("Single-turn RL's Delta is negative", "single_turn", list(deltas("score_single_turn").values()), -1, show("score_single_turn")),
        make_claim("SCoRe from the Pair-SFT model beats Pair-SFT alone (Delta, same tokens)", "score_after_pair",
                   diff("pair_sft_then_score", lambda s: deltas("pair_sft").get(s)), +1,
                   "; ".join(filter(None, [show("pair_sft_then_score"), show("pair_sft_half"), show("pair_sft")])),
                   f"Pair-SFT on half the budget's pairs (Delta {mean_of('pair_sft_half', 'delta'):+.1f}), then SCoRe's RL on "
                   f"the rest: wrong->right {mean_of('pair_sft_then_score', 'delta_i_to_c'):.1f}, right->wrong "
                   f"{mean_of('pair_sft_then_score', 'delta_c_to_i'):.1f}, against Pair-SFT on the whole budget's "
                   f"{mean_of('pair_sft', 'delta_i_to_c'):.1f} and {mean_of('pair_sft', 'delta_c_to_i'):.1f}"),
    ]


def planned_seeds(quick: bool) -> tuple[list[int], list[int]]:
    """The seeds of the self-correction and RRR studies, and of the rest (bench/reproduce.py runs these)."""
    return ([0], [0]) if quick else ([0, 1, 2], [0, 1])


def _validation_over_seeds(results: Path, task: str) -> str:
    """The chosen RRR setting on validation over seeds (bench/selfcorrect_tune.py --only rrr-seeds), if it ran:
    the test figures beside it show how far one split's verdict carries to the other."""
    check = (_tuning(results).get("rrr-seeds") or {}).get(task)
    if not check:
        return ""
    return (f"; on validation ({len(check['per_seed'])} seeds, after the choice): first {check['first_change']:+.1f} ± "
            f"{check['first_change_se']:.1f}, after retry {check['retry_change']:+.1f} ± {check['retry_change_se']:.1f}")


def rrr_claims(root: Path, results: Path, planned: int = len(planned_seeds(False)[0])) -> list[dict[str, Any]]:
    out = []
    for task, key in (("countdown", "rrr_countdown"), ("function-calling", "rrr_function")):
        for variant in ("rrr", "rrr-tuned"):
            rows = [s for s in (read_json(p) for p in sorted((root / f"rrr-{task}" / variant).glob("seed*/summary.json"))) if s]
            rows = [s for s in rows if "rrr_before" in s and "rrr_after" in s]
            gains = [pts(s["rrr_after"]["retry_accuracy"] - s["rrr_before"]["retry_accuracy"]) for s in rows]
            forgot = [pts(s["rrr_after"]["first_accuracy"] - s["rrr_before"]["first_accuracy"]) for s in rows]
            shown = "; ".join(f"first {pts(s['rrr_before']['first_accuracy']):.1f} -> {pts(s['rrr_after']['first_accuracy']):.1f}, "
                              f"after retry {pts(s['rrr_before']['retry_accuracy']):.1f} -> {pts(s['rrr_after']['retry_accuracy']):.1f}"
                              for s in rows)
            label = "RRR" if variant == "rrr" else "RRR with the settings chosen on validation"
            if variant == "rrr-tuned" and shown:
                shown += _validation_over_seeds(results, task)
            head = statistics.fmean(pts(s["rrr_before"]["retry_accuracy"] - s["rrr_before"]["first_accuracy"]) for s in rows) if rows else 0.0
            gain, moved = (statistics.fmean(v) if v else 0.0 for v in (gains, forgot))
            why_kept = f"the shared weights moved the first attempt by {moved:+.1f} points"
            why_gain = (f"before training a retry already adds {head:+.1f} points over the first attempt; training the "
                        f"reflection changed the after-retry accuracy by {gain:+.1f}, and {why_kept}")
            out.append(make_claim(f"{label} raises after-retry accuracy ({task})", key, gains, +1, shown, why_gain, planned=planned))
            # forgetting: the first attempt may not fall more than 1 point (the sign test is on change + 1)
            claim = make_claim(f"{label} keeps the first attempt within 1 point ({task})", "forgetting", [f + 1.0 for f in forgot], +1, shown,
                           why_kept, planned=planned)
            if claim["ours_mean"] is not None:
                claim["ours_mean"] = round(claim["ours_mean"] - 1.0, 2)  # report the change itself
            out.append(claim)
    return out


def r3_claims(root: Path, results: Path) -> list[dict[str, Any]]:
    data = read_json(results / "r3.json") or {}
    rows = data.get("rows", [])
    # runs from before issue 26 judged prefix + continuation (an empty continuation could take the prefix's number)
    before_fix = "" if data.get("setup", {}).get("judgement") == "continuation" else " (a run from before issue 26 fixed R^3's judgement)"
    by = {(r["task"], r["seed"], r["arm"]): r["accuracy"] for r in rows if r.get("seed") is not None}
    out = []
    for task in sorted({t for t, _, _ in by}):  # one claim per task: its seeds are the samples
        seeds = sorted({s for t, s, _ in by if t == task})
        for other, key in (("rl", "r3_rl"), ("sft", "r3_sft")):
            both = [s for s in seeds if (task, s, "r3-mixed") in by and (task, s, other) in by]
            values = [pts(by[(task, s, "r3-mixed")] - by[(task, s, other)]) for s in both]
            measured = "; ".join(f"s{s}: mixed {pts(by[(task, s, 'r3-mixed')]):.1f} vs {other} {pts(by[(task, s, other)]):.1f}"
                                 for s in both)
            why = {("rl", "chain"): "bench/results/r3.md's rollout table (groups solved, success per start state k): late start "
                                    "states were not easy for the weak base (its errors are single arithmetic steps) and what "
                                    "they taught did not carry back to s_0, the only state tested",
                   ("rl", "countdown"): "bench/results/r3.md's rollout table: with two steps the late state is easy (most groups "
                                        "solved from k = 1), so the curriculum spent tokens where little was left to learn; the "
                                        "test is s_0"}.get((other, task),
                   "an under-trained base gains most from imitation: continued SFT beat every RL arm at the same budget")
            out.append(make_claim(f"R^3 (mixed curriculum) beats {other.upper()} at the same tokens ({task})", key, values, +1,
                                  measured + before_fix, why))
    return out or [make_claim(f"R^3 (mixed curriculum) beats {o.upper()} at the same tokens", k, [], +1, "")
                   for o, k in (("rl", "r3_rl"), ("sft", "r3_sft"))]


def capacity_claims(root: Path, results: Path) -> list[dict[str, Any]]:
    """bench/capacity.py on validation: each claim at the largest size that has its figures, each size's mean shown."""
    rows = (read_json(results / "capacity.json") or {}).get("rows", [])

    def trend(get: Callable[[dict[str, Any]], dict[str, Any]], label: str) -> str:
        sizes = ", ".join(f"{r['size']} ({r['parameters']}) {get(r)['mean']:+.1f}" for r in rows if get(r)["mean"] is not None)
        return f"{label} by size: {sizes}" if sizes else ""

    def largest(arm: str) -> dict[str, Any] | None:
        """The last size listed (`--sizes` goes from small to large) with this arm's figures."""
        return next((r for r in reversed(rows) if r[arm]["per_seed"]), None)

    def named(row: dict[str, Any] | None, what: str) -> str:
        return f"At the largest model ({row['size']}, {row['parameters']} parameters), {what}" if row else f"At the largest model, {what}"

    demo, score = largest("demo"), largest("score")
    pair = {p["seed"]: p["delta"] for p in (score or {}).get("pair_sft", {}).get("per_seed", [])}
    return [
        make_claim(named(demo, "GRPO after SFT beats SFT (validation)"), "demo",
                   [p["rl"] - p["sft"] for p in demo["demo"]["per_seed"]] if demo else [], +1,
                   trend(lambda r: r["demo"]["gain"], "GRPO gain")),
        make_claim(named(score, "SCoRe's Delta > 0 (validation)"), "score_delta", [p["delta"] for p in score["score"]["per_seed"]] if score else [],
                   +1, trend(lambda r: r["score"]["delta"], "SCoRe's Delta"),
                   trend(lambda r: r["base"]["delta"], "base Delta")),
        make_claim(named(score, "SCoRe's Delta above Pair-SFT's (validation)"), "score_vs_baselines",
                   [p["delta"] - pair[p["seed"]] for p in score["score"]["per_seed"] if p["seed"] in pair] if score else [], +1,
                   trend(lambda r: r["score_minus_pair_sft"], "SCoRe minus Pair-SFT"),
                   trend(lambda r: r["pair_sft"]["delta"], "Pair-SFT's Delta")),
    ]


STUDY_CLAIMS = {"demo": demo_claims, "selfcorrect": selfcorrect_claims, "rrr-countdown": rrr_claims, "search": search_claims,
                "r3": r3_claims, "alphallm": alphallm_claims, "critic-levers": critic_claims, "test-time": inference_compute_claims,
                "capacity": capacity_claims}


def wall_minutes(log_dir: Path, study: str | None = None) -> float:
    """The run's wall time: the union of its invocations' spans (`logs/spans/*`: "start end" in seconds); with
    `study`, the union of the spans that study ran in (`logs/spans/<study>/*`), across every invocation."""
    return union_minutes(log_dir / "spans" / study if study else log_dir / "spans")


def write_report(root: Path, results: Path, report: Path, *, quick: bool, studies: list[str], log_dir: Path) -> list[dict[str, Any]]:
    claim_fns: dict[str, Callable[[Path, Path], list[dict[str, Any]]]] = {
        **STUDY_CLAIMS, "rrr-countdown": lambda r, res: rrr_claims(r, res, planned=len(planned_seeds(quick)[0]))}
    claims = carry_over([c for name, fn in claim_fns.items() if name in studies for c in fn(root, results)],
                        read_json(results / "reproduction.json") or {})
    # a study's minutes: the spans it ran in over every invocation; a run from before those were recorded
    # (2026-11-28) has only its DONE marker's minutes, those of the invocation that finished it
    done = {p.stem: wall_minutes(log_dir, p.stem) or float(p.read_text() or 0) / 60 for p in sorted(log_dir.glob("*.DONE"))}
    wall = wall_minutes(log_dir) or sum(done.values())
    per_study = ", ".join(f"{name} {minutes:.0f}" for name, minutes in done.items())
    lines = [
        "# Reproduction of the seed papers' claims" + (" (quick smoke run: tiny sizes, not evidence)" if quick else ""),
        "",
        f"Generated by `selfimprove reproduce{' --quick' if quick else ''}` from the runs under `{repo_relative(root)}` and the "
        f"results under `{repo_relative(results)}`. "
        + (f"Wall time of the run on this machine (studies side by side, one torch thread each; the union of its invocations' "
           f"spans): {wall:.0f} min; each study's own minutes: {per_study or 'none finished'} (the spans it ran in, over every "
           "invocation; for studies finished before those were recorded, only the invocation that finished it; a study that "
           "found its runs finished, e.g. from its own bench command, counts only the minutes it spent now). "
           if wall or done else "No study ran through `selfimprove reproduce` on this machine: the figures come from the "
           "studies' own bench commands, whose wall times are in bench/README.md and each result's file. ")
        + "Ours: mean ± standard error over seeds of a difference in points (a claim's sign is the paper's direction).",
        "",
        "| claim | paper | ours | seeds | verdict | measured | why (measured), where it did not hold |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in claims:
        ours = "—" if c["ours_mean"] is None else f"{c['ours_mean']:+.1f}" + (f" ± {c['ours_se']:.1f}" if c["ours_se"] is not None else "")
        mark = " †" if c.get("carried_from") else ""
        lines.append(f"| {c['claim']}{mark} | {c['paper']} | {ours} | {c['seeds']} | {c['verdict']} | {c['measured'] or '—'} | {c['why'] or '—'} |")
    carried = sorted({c["carried_from"] for c in claims if c.get("carried_from")})
    if carried:
        lines += ["", f"† Carried from the committed report of {', '.join(carried)}: some or all of the runs behind these claims "
                      "are not on the machine that wrote this report, so their figures are that run's, unchanged, even where an arm "
                      "they compare was rerun here (rerun their whole study to replace them)."]
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text("\n".join(lines) + "\n")
    results.mkdir(parents=True, exist_ok=True)
    (results / "reproduction.json").write_text(json.dumps(repo_relative_paths(
        {"claims": claims, "quick": quick, "root": root, "generated": datetime.date.today().isoformat()}), indent=2))
    return claims


def carry_over(claims: list[dict[str, Any]], previous: dict[str, Any]) -> list[dict[str, Any]]:
    """Claims that did not run here keep the previous report's figures (`carried_from`: its date), when it had
    them: runs live on the machine that made them, and a report must not lose a measured claim because a later
    machine reran only some studies. A claim measured here always replaces the carried one."""
    if previous.get("quick"):
        return claims
    before = {c["claim"]: c for c in previous.get("claims", []) if c.get("verdict") != "not run"}
    date = previous.get("generated", "2026-11-28")  # the only report written before reports were dated
    out = []
    for c in claims:
        old = before.get(c["claim"])
        out.append({**old, "carried_from": old.get("carried_from", date)} if c["verdict"] == "not run" and old else c)
    return out
