"""The search studies' claims: eta-MCTS against greedy at a budget (`search`), AlphaLLM's loop
(`alphallm`), and test-time compute against its strongest baselines (`test-time`, bench/test_time.py).
Each is one number per seed (`claim_verdict.make_claim`)."""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

from claim_verdict import make_claim, pts, read_json  # noqa: E402  (bench/claim_verdict.py)
from common import interpolate  # noqa: E402  (bench/common.py)

# Fixed before the test split ran, not the best points on it: eta-MCTS at its largest simulation count, and
# the compute-optimal strategy at 256 tokens a problem (the scale of best-of-16).
SIMULATIONS = 16
OPTIMAL_BUDGET = 256


def search_claims(root: Path, results: Path) -> list[dict[str, Any]]:
    """One sample per seed: eta-MCTS at its largest simulation count (fixed in advance, not the best on test) minus greedy."""
    name = "eta-MCTS beats greedy at its budget (Countdown)"
    runs = [d for d in (read_json(p) for p in sorted(results.glob("search_budget*.json"))) if d and d.get("points")]
    values, shown = [], []
    for data in runs:
        points = data["points"]
        greedy = next((p for p in points if p["search"] == "greedy"), None)
        eta = [p for p in points if p["search"] == "eta-mcts"]
        if greedy is None or not eta:
            continue
        most = max(eta, key=lambda p: p["setting"].get("simulations", 0))
        values.append(pts(most["accuracy"] - greedy["accuracy"]))
        shown.append(f"seed {data.get('args', {}).get('seed', '?')}: greedy {pts(greedy['accuracy']):.1f} ({greedy['mean_tokens']:.0f} tokens), "
                      f"eta-MCTS {most['setting'].get('simulations')} simulations {pts(most['accuracy']):.1f} ({most['mean_tokens']:.0f} tokens)")
    return [make_claim(name, "search", values, +1, "; ".join(shown))]


def _round1_kept(rows: list[dict[str, Any]]) -> float:
    kept = [r["kept"] for r in rows if r["arm"] == "mcts-then-grpo" and r["round"] == 1]
    return statistics.fmean(kept) if kept else float("nan")


def _round1_precision(rows: list[dict[str, Any]]) -> float:
    """Percent of round 1's kept paths the verifier calls right, weighted by paths (a seed that kept none adds none)."""
    mine = [(r["kept"], r["kept_precision"]) for r in rows if r["arm"] == "mcts-then-grpo" and r["round"] == 1
            and r.get("kept") and r.get("kept_precision") is not None]
    return 100 * sum(k * p for k, p in mine) / sum(k for k, _ in mine) if mine else float("nan")


def _spent(rows: list[dict[str, Any]], arm: str) -> float:
    """The arm's policy tokens over its rounds (round 0, the shared base, spends none), mean over seeds."""
    per_seed: dict[int, float] = {}
    for r in rows:
        if r["arm"] == arm and r.get("round", 0) > 0:
            per_seed[r["seed"]] = per_seed.get(r["seed"], 0.0) + (r.get("tokens") or 0)
    return statistics.fmean(per_seed.values()) if per_seed else float("nan")


def _mean_field(rows: list[dict[str, Any]], arm: str, field: str) -> float:
    values = [r[field] for r in rows if r["arm"] == arm and r.get("round", 0) > 0 and r.get(field) is not None]
    return statistics.fmean(values) if values else float("nan")


def alphallm_claims(root: Path, results: Path) -> list[dict[str, Any]]:
    data = read_json(results / "alphallm.json") or {}
    rows = data.get("rows", [])
    arm = {(r["arm"], r["seed"], r["round"]): r for r in rows}
    seeds = sorted({r["seed"] for r in rows if r["arm"] == "mcts"})
    last = max((r["round"] for r in rows), default=0)
    rise = [pts(arm[("mcts", s, last)]["greedy"] - arm[("mcts", s, 0)]["greedy"]) for s in seeds if ("mcts", s, last) in arm]
    data_gap = [pts(arm[("mcts", s, last)]["greedy"] - arm[("rft", s, last)]["greedy"]) for s in seeds
                if ("mcts", s, last) in arm and ("rft", s, last) in arm]
    search = [pts(arm[("mcts", s, last)]["search"] - arm[("mcts", s, last)]["greedy"]) for s in seeds if ("mcts", s, last) in arm]
    critics = data.get("critics", {})
    auroc = ", ".join(f"{k} within-problem AUROC {v.get('after', {}).get('within_auroc', float('nan')):.2f}"
                      for k, v in critics.items() if isinstance(v, dict))
    held = sum(v.get("held_out_examples", 0) for v in critics.values() if isinstance(v, dict))
    # critics of the loop's label scale on bench/critic_levers.py's 256 held-out problems (its pointwise arms)
    scale = data.get("setup", {}).get("label_problems", 512)
    levers = {a["kind"]: a["within_auroc"] for a in (read_json(results / "critic_levers.json") or {}).get("arms", [])
              if a.get("lever") == f"labels: {scale} problems"}
    at_scale = ("; on critic_levers' 256 held-out problems the critics of this label scale rank at "
                + ", ".join(f"{k} {v:.2f}" for k, v in levers.items())) if levers else ""
    kept = [(r["kept"], r["kept_precision"]) for r in rows if r["arm"] == "mcts" and r.get("round", 0) > 0 and r.get("kept")
            and r.get("kept_precision") is not None]
    filtered = (f"; of the {sum(k for k, _ in kept):,} paths the ORM filter kept over the rounds and seeds, "
                f"{100 * sum(k * p for k, p in kept) / sum(k for k, _ in kept):.0f}% were right") if kept else ""
    abl = {r["setting"]: r["accuracy"] for r in data.get("ablation", [])}
    tool = (f"; with the tool critic the same vanilla MCTS reached {pts(abl['vanilla MCTS +tool']):.1f} against "
            f"{pts(abl['vanilla MCTS']):.1f}" if {"vanilla MCTS", "vanilla MCTS +tool"} <= abl.keys() else "")
    then = [pts(arm[("mcts-then-grpo", s, last)]["greedy"] - arm[("grpo", s, last)]["greedy"]) for s in seeds
            if ("mcts-then-grpo", s, last) in arm and ("grpo", s, last) in arm]
    then_shown = "; ".join(f"s{s}: search-data SFT then GRPO {pts(arm[('mcts-then-grpo', s, last)]['greedy']):.1f}, GRPO "
                           f"{pts(arm[('grpo', s, last)]['greedy']):.1f}" for s in seeds
                           if ("mcts-then-grpo", s, last) in arm and ("grpo", s, last) in arm)
    return [
        make_claim("Search-data SFT before GRPO beats GRPO alone at the same total tokens", "alpha_then_grpo", then, +1,
                   f"round {last}, greedy: {then_shown}",
                   f"round 1's eta-MCTS data (SFT on {_round1_kept(rows):.0f} kept paths, {_round1_precision(rows):.0f}% of them "
                   "right by the verifier) spent its tokens where GRPO's own samples gained more (bench/results/alphallm.md)"),
        make_claim("Greedy accuracy rises over AlphaLLM's rounds", "alpha_rounds", rise, +1,
                   f"round 0 -> {last}, mcts arm: " + ", ".join(f"{v:+.1f}" for v in rise),
                   f"{data.get('setup', {}).get('budget_tokens_per_round', 0):,} policy tokens a round on a tiny model: "
                   f"{_mean_field(rows, 'mcts', 'kept'):.0f} paths kept per round by the learned ORM's filter "
                   "(bench/results/alphallm.md)"),
        make_claim("eta-MCTS data beats sampled data (RFT) at the same token budget", "alpha_data", data_gap, +1,
                   f"round {last}, greedy, eta-MCTS minus RFT: " + ", ".join(f"{v:+.1f}" for v in data_gap)
                   + f"; policy tokens over the rounds, mean per seed: eta-MCTS {_spent(rows, 'mcts'):,.0f}, "
                   f"RFT {_spent(rows, 'rft'):,.0f} (the search stops when its prompts are used up)",
                   "both arms train on the paths the learned ORM scores above gamma (no gold answers); kept per round (mean "
                   f"over seeds and rounds): eta-MCTS {_mean_field(rows, 'mcts', 'kept'):.0f}, sampling {_mean_field(rows, 'rft', 'kept'):.0f}"),
        make_claim("Test-time eta-MCTS beats greedy", "alpha_search", search, +1,
                   f"round {last}, eta-MCTS minus greedy with that round's critics: " + ", ".join(f"{v:+.1f}" for v in search),
                   f"the critics, retrained each round on {scale} problems of labels, rank one problem's answers weakly{at_scale} "
                   f"(round 0's own 10% held-out split, {held} examples: {auroc}){filtered}{tool}"),
    ]


def _per_seed(row: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    return (row or {}).get("per_seed", {})


def inference_compute_claims(root: Path, results: Path) -> list[dict[str, Any]]:
    """bench/test_time.py's claims, one number per seed (points of test accuracy): eta-MCTS with the learned
    critics against greedy, and against best-of-N by the ORM and majority vote at its own tokens (each curve
    interpolated in log-tokens); the tool critic in eta-MCTS; compute-optimal against weighted best-of-N at its
    token budget."""
    data = read_json(results / "test_time.json") or {}
    rows = data.get("rows", [])

    def row(strategy: str, **setting: Any) -> dict[str, Any] | None:
        return next((r for r in rows if r["strategy"] == strategy and all(r["setting"].get(k) == v for k, v in setting.items())), None)

    def curve(strategy: str, seed: str) -> list[tuple[float, float]]:
        return [(r["per_seed"][seed]["tokens"], r["per_seed"][seed]["accuracy"]) for r in rows
                if r["strategy"] == strategy and seed in r.get("per_seed", {})]

    def against(mine: dict[str, Any] | None, other: str, budget: float | None = None) -> tuple[list[float], str]:
        """Per seed, `mine` minus `other`'s curve at the tokens `mine` spent, or with `budget` at that budget or
        what `mine` spent if more; a seed whose tokens fall outside `other`'s curve is not compared (and said)."""
        values, shown = [], []
        for seed, m in sorted(_per_seed(mine).items()):
            tokens = m["tokens"] if budget is None else max(budget, m["tokens"])
            points = curve(other, seed)
            at = interpolate(points, tokens)
            if math.isnan(at):
                reason = f"outside {other}'s tokens" if points else f"no {other} for this seed"
                shown.append(f"s{seed}: {m['accuracy']:.1f} at {m['tokens']:.0f} tokens, {reason}: not compared")
                continue
            values.append(m["accuracy"] - at)
            shown.append(f"s{seed}: {m['accuracy']:.1f} at {m['tokens']:.0f} tokens vs {other} {at:.1f} at {tokens:.0f}")
        return values, "; ".join(shown)

    def minus(mine: dict[str, Any] | None, other: dict[str, Any] | None) -> tuple[list[float], str]:
        pairs = [(s, m, _per_seed(other)[s]) for s, m in sorted(_per_seed(mine).items()) if s in _per_seed(other)]
        return ([m["accuracy"] - o["accuracy"] for _, m, o in pairs],
                "; ".join(f"s{s}: {m['accuracy']:.1f} ({m['tokens']:.0f} tokens) vs {o['accuracy']:.1f} ({o['tokens']:.0f})" for s, m, o in pairs))

    eta, eta_tool = row("eta-mcts", simulations=SIMULATIONS), row("eta-mcts-tool", simulations=SIMULATIONS)
    critics = ", ".join(f"{k} {v['within_auroc']:.2f}" for k, v in data.get("critics", {}).items())
    bon = ", ".join(f"N = {r['setting']['n']} {r['accuracy']:.1f}" for r in rows if r["strategy"] == "best_of_n-orm")
    vote = ", ".join(f"N = {r['setting']['n']} {r['accuracy']:.1f}" for r in rows if r["strategy"] == "majority_vote")
    weak = (f"the learned critics rank one problem's answers weakly (held-out within-problem AUROC {critics}); best-of-N by "
            f"the ORM: {bon}; majority vote: {vote} (bench/results/test_time.md)")
    greedy_values, greedy_shown = minus(eta, row("greedy"))
    bon_values, bon_shown = against(eta, "best_of_n-orm")
    vote_values, vote_shown = against(eta, "majority_vote")
    tool_values, tool_shown = minus(eta_tool, eta)
    optimal = row("compute-optimal", budget=OPTIMAL_BUDGET)
    # at its budget, as Snell et al. compare (it may spend less: a cheap strategy for easy problems), or at what
    # it spent when the greedy estimate and the strategies' 10% slack (bench/test_time.py) took it over
    opt_values, opt_shown = against(optimal, "weighted_best_of_n-orm", budget=OPTIMAL_BUDGET)
    choices = "; ".join(f"s{s}: " + ", ".join(f"bin {b}: {c}" for b, c in m.get("choice", {}).items())
                        for s, m in sorted(_per_seed(optimal).items()))
    where = f"eta-MCTS at {SIMULATIONS} simulations (test-time study): "
    return [
        make_claim("Test-time eta-MCTS with the learned critics beats greedy (test-time study)", "alpha_search", greedy_values, +1,
                   where + greedy_shown, weak),
        make_claim("eta-MCTS beats best-of-N by the ORM at equal tokens", "tt_bon", bon_values, +1, where + bon_shown, weak),
        make_claim("eta-MCTS beats majority vote at equal tokens", "tt_vote", vote_values, +1, where + vote_shown, weak),
        make_claim("A gold-free tool critic lifts eta-MCTS", "tool_critic", tool_values, +1, where + tool_shown),
        make_claim("Compute-optimal allocation beats weighted best-of-N at the same token budget", "compute_optimal", opt_values, +1,
                   f"budget {OPTIMAL_BUDGET} tokens a problem, against weighted best-of-N at that budget: {opt_shown}; chosen per bin of the ORM's greedy score on "
                   f"validation: {choices}",
                   _optimal_why(data, optimal, row("weighted_best_of_n-orm", n=OPTIMAL_BUDGET // 16), row("greedy"))),
    ]


def _optimal_why(data: dict[str, Any], optimal: dict[str, Any] | None, full: dict[str, Any] | None, greedy: dict[str, Any] | None) -> str:
    """Why compute-optimal fell short, from its own figures: how few validation problems each bin held, what it
    spent of its budget, and what the baseline bought with all of it."""
    if not optimal or not full or not greedy:
        return ""
    per_bin = data.get("setup", {}).get("val_problems", 0) // 4
    se = 100 * math.sqrt(0.25 / per_bin) if per_bin else float("nan")
    return (f"each of the 4 difficulty bins held about {per_bin} validation problems (a standard error near {se:.0f} points), "
            f"too few to tell strategies a point or two apart, so the choice fell on cheap ones: it spent "
            f"{optimal['tokens']:.0f} of its {OPTIMAL_BUDGET} tokens a problem, where weighted best-of-N spends them all and gains "
            f"{full['accuracy'] - greedy['accuracy']:+.1f} over greedy on test; the difficulty estimate is the learned ORM's score "
            f"of the greedy answer (within-problem AUROC {data.get('critics', {}).get('orm', {}).get('within_auroc', float('nan')):.2f})")


def _lever_moves(arms: list[dict[str, Any]]) -> str:
    """What moved the ORM, read from the arms (not written in by hand, so a rerun of critic_levers keeps it true):
    the AUROC a doubling of labels between the two largest label arms, the largest move of any other lever against
    the pointwise arm on the same labels (the random trunk left out: it is the control, not a lever to pull), and
    the spread of one arm's seeds."""
    orm = [a for a in arms if a["kind"] == "orm" and a.get("within_auroc") is not None and not math.isnan(a["within_auroc"])]
    labels = sorted((a for a in orm if a["lever"].startswith("labels:") and a.get("label_tokens")), key=lambda a: a["label_tokens"])
    parts = []
    if len(labels) >= 2 and labels[-1]["label_tokens"] > labels[-2]["label_tokens"]:
        low, high = labels[-2], labels[-1]
        per = (high["within_auroc"] - low["within_auroc"]) / math.log2(high["label_tokens"] / low["label_tokens"])
        parts.append(f"more labels moved the ORM {per:+.3f} AUROC a doubling ({low['lever']} to {high['lever'].removeprefix('labels: ')})")
    base = {a["label_tokens"]: a["within_auroc"] for a in labels}
    levers = [a for a in orm if not a["lever"].startswith(("labels:", "seed", "trunk at random")) and a.get("label_tokens") in base]
    if levers:
        top = max(levers, key=lambda a: abs(a["within_auroc"] - base[a["label_tokens"]]))
        parts.append(f"the other levers moved it {abs(top['within_auroc'] - base[top['label_tokens']]):.3f} at most ({top['lever']})")
    seeds: dict[str, list[float]] = {}
    for a in orm:
        stem, _, tail = a["arm"].rpartition("-s")
        if stem and tail.isdigit():
            seeds.setdefault(stem, []).append(a["within_auroc"])
    spread = {stem: max(v) - min(v) for stem, v in seeds.items() if len(v) > 1}
    if spread:
        stem = max(spread, key=lambda k: len(seeds[k]))
        parts.append(f"one arm's seeds spread {spread[stem]:.3f} ({len(seeds[stem])} seeds of {stem})")
    return "; ".join(parts) + "; " if parts else ""


def critic_claims(root: Path, results: Path) -> list[dict[str, Any]]:
    """`bench/critic_levers.py`'s two asks: the best critic of each kind against the 0.85 target (ours: the
    best ORM's within-problem AUROC minus 0.85, in points), and best-of-N by the best ORM from N = 4 to 64."""
    data = read_json(results / "critic_levers.json") or {}
    arms = data.get("arms", [])
    best = {k: max((a for a in arms if a["kind"] == k and a.get("within_auroc") is not None), key=lambda a: a["within_auroc"], default=None)
            for k in ("value", "prm", "orm")}
    shown = "; ".join(f"{k}: {a['within_auroc']:.3f} ({a['lever']})" for k, a in best.items() if a)
    ceiling = data.get("labels", {}).get("ceiling", {})
    orm = best["orm"]
    target = [pts(orm["within_auroc"] - 0.85)] if orm else []
    curves = dict(data.get("best_of_n", {}).get("by_critic", []))
    curve = curves.get(orm["arm"]) if orm else None
    rise = [pts(curve["64"] - curve["4"])] if curve and "64" in curve and "4" in curve else []
    vote = dict(data.get("best_of_n", {}).get("majority_vote", []))

    def at(c: dict[str, float]) -> str:
        return " / ".join(f"{100 * c[n]:.1f}" for n in ("1", "4", "16", "64") if n in c)

    return [
        make_claim("The best learned critic ranks one problem's answers at within-problem AUROC >= 0.85 (ORM)", "auroc_target",
                   target, +1, f"best arm per kind on 256 held-out problems: {shown}" if shown else "",
                   _lever_moves(arms) + "the label-noise ceiling "
                   + (f"(an oracle of 32 fresh rollouts a prefix) is value {ceiling.get('value', float('nan')):.3f}, PRM "
                      f"{ceiling.get('prm', float('nan')):.3f}, " if ceiling else "")
                   + "so the critic, not its labels, is the limit (bench/results/critic_levers.md)"),
        make_claim("Best-of-N by the learned ORM rises with N (N = 4 to 64)", "bon_rises", rise, +1,
                   (f"{orm['arm']} at N = 1 / 4 / 16 / 64: {at(curve)}; majority vote {at(vote)}" if curve and orm else ""),
                   "at N = 64 the top-scored answer is a confidently wrong one often enough to lose to a single sample: a "
                   f"within-problem AUROC of {orm['within_auroc']:.2f} orders most pairs, not the top of 64" if orm else ""),
    ]
