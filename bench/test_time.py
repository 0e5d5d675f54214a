"""Test-time compute against its strongest baselines (issue 26, item 3): accuracy against sampled tokens.

The policy is the AlphaLLM bench's base (`bench/alphallm.py`, Countdown step format); the learned critics
are the best single arm of each kind by held-out within-problem AUROC in `bench/critic_levers.py`'s run
(`--levers-dir`; chosen on its validation problems, never on these). Every search runs through
`selfimprove search` (`run_search_eval`), which counts every sampled token per problem, on
`--test-problems` TEST problems and on `--val-problems` validation TRAIN problems (past the SFT pool
and the critics' labels), for each seed in `--seeds` (the search's sampling stream):

- greedy (its answer scored by the ORM, which is also the difficulty estimate below);
- majority vote, best-of-N by the ORM, weighted best-of-N (ORM-weighted vote) at N = 4, 16, 64;
- beam search with the PRM (4 children per state, width 1, 2, 4);
- DVTS with the PRM (4 children per subtree, n = 8, 16, 32: 2, 4, 8 subtrees);
- eta-MCTS (value + PRM for unfinished states, ORM for finished ones; the AlphaLLM bench's settings)
  at 4, 8, 16 simulations;
- the same best-of-N, weighted best-of-N, beam, DVTS and eta-MCTS with the gold-free tool critic (it
  checks each written line's arithmetic and the final value against the prompt's target; it reads no
  gold answer);
- compute-optimal (Snell et al. 2024): problems binned by the ORM's score of the greedy answer
  (quartiles on the validation problems); at each token budget, per bin, the learned-critic strategy
  with the best validation accuracy within the budget (or up to 10% over it); on test, each problem
  gets its bin's strategy and pays the greedy answer's tokens too.

Resumable (each search resumes per batch of problems). Results: `bench/results/test_time.{md,json,png}`.

    OMP_NUM_THREADS=1 .venv/bin/python bench/test_time.py            # hours on 2 cores; resumes
    .venv/bin/python bench/test_time.py --report                      # the table from what has run
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
from pathlib import Path
from typing import Any

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from transformers.utils import logging as hf_logging  # noqa: E402

import alphallm  # noqa: E402  (the shared base and the eta-MCTS settings)
from common import RESULTS, interpolate, line_bar, log, repo_relative_paths, stderr  # noqa: E402
from selfimprove.config import validate  # noqa: E402
from selfimprove.eval.report import markdown_table, save_figure  # noqa: E402
from selfimprove.search.recipe import SearchRecipe  # noqa: E402
from selfimprove.search.run import read_results, run_search_eval  # noqa: E402

NS = [4, 16, 64]
SLACK = 1.1  # a budget admits a strategy whose validation mean tokens are within 10% over it


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run-dir", type=Path, default=Path("runs/test-time"))
    ap.add_argument("--base-dir", type=Path, default=Path("runs/alphallm-bench"))
    ap.add_argument("--levers-dir", type=Path, default=Path("runs/critic-levers"))
    ap.add_argument("--sft-steps", type=int, default=600)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--test-problems", type=int, default=500)
    ap.add_argument("--val-problems", type=int, default=200)
    ap.add_argument("--val-first", type=int, default=600_000)
    ap.add_argument("--problems-per-batch", type=int, default=50)
    ap.add_argument("--only", nargs="*", default=None, help="run only these strategy labels")
    ap.add_argument("--report", action="store_true", help="only write the report from what has run")
    return ap.parse_args(argv)


def chosen_critics(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """The critics this run uses: chosen once (`best_critics`) and kept in the run folder, so a resumed or
    second process uses the same ones even if `critic_levers` trained more arms since."""
    path = args.run_dir / "critics.json"
    if path.is_file():
        return json.loads(path.read_text())
    critics = best_critics(args.levers_dir)
    args.run_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(critics, indent=2))
    return critics


def best_critics(levers: Path) -> dict[str, dict[str, Any]]:
    """Per kind, the seed-0 arm of `critic_levers` with the best held-out within-problem AUROC."""
    best: dict[str, dict[str, Any]] = {}
    for path in sorted((levers / "arms").glob("*.json")):
        r = json.loads(path.read_text())
        if r["seed"] == 0 and (levers / "critics" / r["name"] / "critic.json").is_file():
            if r["kind"] not in best or r["after"]["within_auroc"] > best[r["kind"]]["within_auroc"]:
                best[r["kind"]] = {"arm": r["name"], "within_auroc": r["after"]["within_auroc"],
                                   "path": str(levers / "critics" / r["name"])}
    missing = {"value", "prm", "orm"} - set(best)
    if missing:
        raise SystemExit(f"no trained {sorted(missing)} critic in {levers}: run bench/critic_levers.py first")
    return best


def strategies(critics: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    value, prm, orm = (critics[k]["path"] for k in ("value", "prm", "orm"))
    sampled = {"temperature": 1.0, "max_answer_tokens": alphallm.MAX_ANSWER, "step": alphallm.STEP}
    eta = {k: v for k, v in alphallm.eta_search(argparse.Namespace(simulations=4)).items() if k != "simulations"}
    sims = {"param": "simulations", "values": [4, 8, 16]}
    n_sweep = {"param": "n", "values": NS}
    beam = {"name": "beam", "params": {**sampled, "expand": 4, "max_steps": 4}, "sweep": {"param": "beam_width", "values": [1, 2, 4]}}
    return [
        {"label": "greedy", "family": "none", "search": {"name": "greedy", "params": {"max_answer_tokens": alphallm.MAX_ANSWER,
                                                                                     "step": alphallm.STEP}},
         "critics": {"orm": orm}},
        {"label": "majority_vote", "family": "none", "search": {"name": "majority_vote", "params": sampled, "sweep": n_sweep}},
        {"label": "best_of_n-orm", "family": "learned", "search": {"name": "best_of_n", "params": sampled, "sweep": n_sweep},
         "critics": {"orm": orm}},
        {"label": "weighted_best_of_n-orm", "family": "learned",
         "search": {"name": "weighted_vote", "params": sampled, "sweep": n_sweep}, "critics": {"orm": orm}},
        {"label": "beam-prm", "family": "learned", "search": beam, "critics": {"prm": prm}},
        {"label": "dvts-prm", "family": "learned", "search": {"name": "dvts", "params": {**sampled, "expand": 4, "max_steps": 4},
                                                              "sweep": {"param": "n", "values": [8, 16, 32]}},
         "critics": {"prm": prm}},
        {"label": "eta-mcts", "family": "learned", "search": {"name": "mcts", "params": {**eta, "final": "visits"}, "sweep": sims},
         "critics": {"value": value, "prm": prm, "outcome": orm}},
        {"label": "best_of_n-tool", "family": "tool", "search": {"name": "best_of_n", "params": sampled, "sweep": n_sweep},
         "critics": {"tool": True}},
        {"label": "weighted_best_of_n-tool", "family": "tool",
         "search": {"name": "weighted_vote", "params": sampled, "sweep": n_sweep}, "critics": {"tool": True}},
        {"label": "beam-tool", "family": "tool", "search": beam, "critics": {"tool": True}},
        {"label": "dvts-tool", "family": "tool", "search": {"name": "dvts", "params": {**sampled, "expand": 4, "max_steps": 4},
                                                            "sweep": {"param": "n", "values": [8, 16, 32]}}, "critics": {"tool": True}},
        {"label": "eta-mcts-tool", "family": "tool", "search": {"name": "mcts", "params": {**eta, "final": "visits"}, "sweep": sims},
         "critics": {"value": value, "prm": prm, "tool": True, "outcome": "tool"}},
    ]


def run_dir(args: argparse.Namespace, split: str, seed: int, label: str) -> Path:
    return args.run_dir / split / f"seed{seed}" / label


def stage_search(args: argparse.Namespace, base: str, split: str, seed: int, spec: dict[str, Any]) -> None:
    out = run_dir(args, split, seed, spec["label"])
    recipe = validate(SearchRecipe, {
        "run_dir": str(out), "seed": seed, "model": {"path": base}, "task": alphallm.TASK,
        "split": "test" if split == "test" else "train", "first_problem": 0 if split == "test" else args.val_first,
        "num_problems": args.test_problems if split == "test" else args.val_problems,
        "problems_per_batch": args.problems_per_batch, "search": spec["search"],
        "critics": {**spec.get("critics", {}), "batch_size": 256}})
    summary = run_search_eval(recipe, bar=line_bar)
    for p in summary["points"]:
        log(f"  {split} seed {seed} {spec['label']} {p['setting']}: {p['accuracy']:.1%}, {p['mean_tokens']:.0f} tokens/problem")


def points(args: argparse.Namespace, split: str, seed: int, spec: dict[str, Any]) -> list[dict[str, Any]]:
    """Per point of a finished run: its setting, records by problem, accuracy and mean tokens."""
    out = run_dir(args, split, seed, spec["label"])
    if not (out / "summary.json").is_file():
        return []
    summary = json.loads((out / "summary.json").read_text())
    records = read_results(out / "results.jsonl")
    rows = []
    for index, point in enumerate(summary["points"]):
        mine = {r["problem_id"]: r for r in records if r["point"] == index}
        rows.append({"label": spec["label"], "family": spec["family"], "setting": point["setting"],
                     "accuracy": point["accuracy"], "tokens": point["mean_tokens"], "records": mine})
    return rows


def compute_optimal(val: list[dict[str, Any]], test: list[dict[str, Any]], greedy_val: dict[str, Any],
                    greedy_test: dict[str, Any], parts: int = 4) -> list[dict[str, Any]]:
    """Snell et al.'s compute-optimal strategy with a gold-free difficulty estimate: the ORM score of the
    greedy answer, cut into `parts` quantile bins on the validation problems; per budget and bin, the
    candidate with the best validation accuracy among those whose validation mean tokens fit the budget
    with `SLACK` (an N-sample strategy costs N x 16 tokens nominal and a little more in practice: 65 for
    N = 4, 259 for 16; without it a budget of 256 would shut out every 16-sample strategy) (ties: the
    cheaper; a bin no validation problem fell in: the best over all of them). On test, a problem pays its
    greedy answer's tokens (the estimate) plus its strategy's, unless that is greedy."""
    cuts = quantiles([r["score"] for r in greedy_val.values() if r["score"] is not None], parts)

    def bin_of(record: dict[str, Any]) -> int:
        score = record["score"] if record["score"] is not None else 0.0
        return sum(score > c for c in cuts)

    candidates = [p for p in val if p["family"] in ("none", "learned")]
    top = max((p["tokens"] for p in candidates), default=0.0)
    budgets = [32 * 2**k for k in range(12) if 32 * 2 ** (k - 1) <= top]  # 32, 64, ... up to the dearest candidate
    test_by_key = {(p["label"], json.dumps(p["setting"], sort_keys=True)): p for p in test}
    curve = []
    for budget in budgets:
        choice: dict[int, dict[str, Any]] = {}
        for b in range(len(cuts) + 1):
            ids = [pid for pid, r in greedy_val.items() if bin_of(r) == b] or list(greedy_val)
            best = None
            for p in candidates:
                if p["tokens"] > budget * SLACK:
                    continue
                acc = statistics.mean(float(p["records"][i]["correct"]) for i in ids if i in p["records"])
                if best is None or (acc, -p["tokens"]) > (best[0], -best[1]["tokens"]):  # ties: the cheaper
                    best = (acc, p)
            if best is not None:
                choice[b] = best[1]
        if len(choice) < len(cuts) + 1:
            continue
        correct, tokens = [], []
        for pid, g in greedy_test.items():
            chosen = test_by_key.get((choice[bin_of(g)]["label"], json.dumps(choice[bin_of(g)]["setting"], sort_keys=True)))
            if chosen is None or pid not in chosen["records"]:
                break
            r = chosen["records"][pid]
            correct.append(float(r["correct"]))
            tokens.append(r["tokens"] + (g["tokens"] if chosen["label"] != "greedy" else 0))
        else:
            curve.append({"budget": budget, "accuracy": statistics.mean(correct), "tokens": statistics.mean(tokens),
                          "choice": {str(b): f"{p['label']} {p['setting']}" for b, p in choice.items()}})
    return curve


def quantiles(values: list[float], parts: int = 4) -> list[float]:
    values = sorted(values)
    if not values:
        return []
    return [values[min(len(values) - 1, (len(values) * k) // parts)] for k in range(1, parts)]


def split_rows(args: argparse.Namespace, specs: list[dict[str, Any]], per_seed: dict[int, dict[str, list[dict[str, Any]]]],
               split: str) -> list[dict[str, Any]]:
    """One row per (strategy, setting) of a split: accuracy mean ± s.e. over seeds, tokens, and each seed's figures."""
    rows = []
    for spec in specs:
        settings = {json.dumps(p["setting"], sort_keys=True) for s in args.seeds for p in per_seed[s][split] if p["label"] == spec["label"]}
        for key in sorted(settings, key=lambda k: sorted(json.loads(k).items())):
            found = {s: p for s in args.seeds for p in per_seed[s][split] if p["label"] == spec["label"]
                     and json.dumps(p["setting"], sort_keys=True) == key}
            accs, toks = [100 * p["accuracy"] for p in found.values()], [p["tokens"] for p in found.values()]
            rows.append({"strategy": spec["label"], "family": spec["family"], "setting": json.loads(key), "seeds": len(found),
                         "accuracy": statistics.mean(accs), "se": stderr(accs), "tokens": statistics.mean(toks),
                         "per_seed": {str(s): {"accuracy": 100 * p["accuracy"], "tokens": p["tokens"]} for s, p in found.items()}})
    return rows


def report(args: argparse.Namespace, specs: list[dict[str, Any]], critics: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    per_seed: dict[int, dict[str, list[dict[str, Any]]]] = {}
    optimal: dict[int, list[dict[str, Any]]] = {}
    for seed in args.seeds:
        per_seed[seed] = {split: [p for s in specs for p in points(args, split, seed, s)] for split in ("val", "test")}
        greedy = {split: next((p["records"] for p in per_seed[seed][split] if p["label"] == "greedy"), None) for split in ("val", "test")}
        if greedy["val"] and greedy["test"]:
            optimal[seed] = compute_optimal(per_seed[seed]["val"], per_seed[seed]["test"], greedy["val"], greedy["test"])
    rows, val_rows = (split_rows(args, specs, per_seed, split) for split in ("test", "val"))
    opt_rows = []
    for budget in sorted({c["budget"] for curve in optimal.values() for c in curve}):
        found = {s: c for s, curve in optimal.items() for c in curve if c["budget"] == budget}
        if len(found) == len(optimal):
            accs = [100 * c["accuracy"] for c in found.values()]
            opt_rows.append({"strategy": "compute-optimal", "family": "learned", "setting": {"budget": budget}, "seeds": len(found),
                             "accuracy": statistics.mean(accs), "se": stderr(accs),
                             "tokens": statistics.mean(c["tokens"] for c in found.values()),
                             "per_seed": {str(s): {"accuracy": 100 * c["accuracy"], "tokens": c["tokens"], "choice": c["choice"]}
                                          for s, c in found.items()}})
    greedy_acc = next((r["accuracy"] for r in rows if r["strategy"] == "greedy"), float("nan"))
    bon = [(r["tokens"], r["accuracy"]) for r in rows if r["strategy"] == "best_of_n-orm"]
    verdict = [f"eta-MCTS ({r['setting']}): {r['accuracy']:.1f} ± {r['se']:.1f} at {r['tokens']:.0f} tokens; greedy "
               f"{greedy_acc:.1f}; best-of-N by the ORM at these tokens {interpolate(bon, r['tokens']):.1f}"
               for r in rows if r["strategy"] == "eta-mcts"]
    data = {"setup": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}, "critics": critics,
            "rows": rows + opt_rows, "eta_mcts_against_baselines": verdict,
            "validation_rows": val_rows}  # the validation problems compute-optimal chose on
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "test_time.json").write_text(json.dumps(repo_relative_paths(data), indent=2) + "\n")
    table = markdown_table(["strategy", "critic", "setting", "seeds", "accuracy %", "± s.e.", "tokens / problem"],
                           [[r["strategy"], r["family"], json.dumps(r["setting"]), r["seeds"], r["accuracy"], r["se"], r["tokens"]]
                            for r in rows + opt_rows])
    lines = ["# Test-time compute against its strongest baselines (bench/test_time.py)", "",
             f"{args.test_problems} test problems, seeds {args.seeds}; learned critics "
             + ", ".join(f"{k} `{v['arm']}` (held-out within-problem AUROC {v['within_auroc']:.3f})" for k, v in critics.items())
             + f"; compute-optimal chosen on {args.val_problems} validation train problems.", "", table, "",
             *[f"- {v}" for v in verdict]]
    (RESULTS / "test_time.md").write_text("\n".join(lines) + "\n")
    fig, ax = plt.subplots(figsize=(8, 5))
    for i, label in enumerate(dict.fromkeys(r["strategy"] for r in rows + opt_rows)):
        mine = sorted((r for r in rows + opt_rows if r["strategy"] == label), key=lambda r: r["tokens"])
        style = "--" if mine[0]["family"] == "tool" else "-"
        ax.errorbar([r["tokens"] for r in mine], [r["accuracy"] for r in mine], yerr=[0 if math.isnan(r["se"]) else r["se"] for r in mine],
                    fmt="osD^v<>ph*X"[i % 11] + style, color=plt.get_cmap("tab20").colors[(2 * i) % 20 + (i >= 10)], label=label, capsize=2)
    ax.set_xscale("log")
    ax.set_xlabel("sampled tokens per problem")
    ax.set_ylabel("test accuracy %")
    ax.legend(fontsize=7)
    save_figure(fig, RESULTS / "test_time.png")
    log(f"wrote {RESULTS / 'test_time.md'}, .json, .png")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    critics = chosen_critics(args)
    specs = strategies(critics)
    if not args.report:
        base = alphallm.stage_base(argparse.Namespace(sft_steps=args.sft_steps), args.base_dir)
        for seed in args.seeds:
            for split in ("val", "test"):
                for spec in specs:
                    if args.only is None or spec["label"] in args.only:
                        stage_search(args, base, split, seed, spec)
    report(args, specs, critics)
    return 0


if __name__ == "__main__":
    sys.exit(main())
