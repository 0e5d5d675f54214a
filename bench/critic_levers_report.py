"""The report of `bench/critic_levers.py`: the tables, the ensembles, best-of-N and majority vote from one
pool of samples, and the figure (`bench/results/critic_levers.{md,json,png}`)."""

from __future__ import annotations

import argparse
import json
import statistics
from collections import Counter
from pathlib import Path
from typing import Any

from common import RESULTS, log, repo_relative_paths
from selfimprove.critics.labels import load_labels
from selfimprove.critics.metrics import within_problem_auroc
from selfimprove.eval.report import markdown_table, save_figure

KINDS = ("value", "prm", "orm")


def best_of_n_accuracy(right: list[list[bool]], scores: list[list[float]], n: int) -> float:
    """Mean over problems and over the disjoint groups of n samples of whether the top-scored sample of
    the group is right (the first of tied scores)."""
    values = []
    for r, s in zip(right, scores):
        for g in range(0, len(r) - n + 1, n):
            best = max(range(g, g + n), key=lambda k: (s[k], -k))
            values.append(float(r[best]))
    return statistics.mean(values)


def ensemble_name(kind: str, args: argparse.Namespace) -> str:
    return f"{kind}-c{args.chunks}-mixed x3 seeds (mean score)"


def stage_report(args: argparse.Namespace, all_arms: list[dict[str, Any]]) -> dict[str, Any]:
    labels = {p.stem: json.loads(p.read_text()) for p in sorted((args.run_dir / "labels").glob("*.json"))}
    val = load_labels(args.run_dir / "labels" / "val.jsonl")
    results = {a["name"]: json.loads((args.run_dir / "arms" / f"{a['name']}.json").read_text()) for a in all_arms
               if (args.run_dir / "arms" / f"{a['name']}.json").is_file()}
    rows, table = [], []
    for kind in KINDS:
        held = [e for e in val if e.kind == kind]
        mine = [r for r in results.values() if r["kind"] == kind]
        base = next((r for r in mine if r["chunks"] == 1 and r["objective"] == "pointwise" and not r["smoothing"]), None)
        for r in mine:
            a = r["after"]
            row = {"kind": kind, "arm": r["name"], "lever": lever(r, args), "label_tokens": r["label_tokens"],
                   "train_examples": r["train_examples"], "within_auroc": a["within_auroc"], "auroc": a["auroc"],
                   "brier": a["brier"], "seconds": r["seconds"]}
            rows.append(row)
        members = [r for r in mine if r["chunks"] == args.chunks and r["objective"] == "mixed" and not r["smoothing"]]
        if len(members) == 3:
            mean = [statistics.mean(s) for s in zip(*(r["held_out_scores"] for r in members))]
            within = within_problem_auroc(mean, [e.label for e in held], [e.group for e in held])
            rows.append({"kind": kind, "arm": ensemble_name(kind, args), "lever": "ensemble of 3 (mixed, all labels)",
                         "label_tokens": members[0]["label_tokens"], "train_examples": members[0]["train_examples"],
                         "within_auroc": within, "auroc": float("nan"), "brier": float("nan"),
                         "seconds": sum(r["seconds"] for r in members)})
        for row in rows:
            if row["kind"] == kind:
                row["delta_vs_base"] = row["within_auroc"] - base["after"]["within_auroc"] if base else float("nan")
        positives = sum(1 for e in held if e.label >= 0.5)
        ceiling = labels.get("ceiling", {}).get(kind)
        table.append(f"{kind}: {len(held)} held-out examples of {len({e.group for e in held})} problems, {positives} labelled >= 0.5"
                     + (f"; label-noise ceiling (an oracle scoring each prefix by {labels['ceiling']['rollouts']} fresh rollouts) "
                        f"**{ceiling:.3f}**" if ceiling is not None else "; exact labels (ceiling 1)" if kind == "orm" else ""))
    bon = bon_report(args, results)
    summary = {"setup": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "stage"},
               "labels": labels, "arms": rows, "best_of_n": bon}
    write_report(args, summary, table)
    return summary


def lever(r: dict[str, Any], args: argparse.Namespace) -> str:
    if r.get("trunk") == "scratch":
        return f"trunk at random, not from the policy ({r['chunks']} chunks)"
    if r.get("balance"):
        return f"balanced classes, the rarer drawn again ({r['chunks']} chunks)"
    if r.get("trunk", "policy") != "policy":
        return f"trunk from a larger policy ({r['trunk']}, SFT as the base; {r['chunks']} chunks)"
    if r["seed"]:
        return f"seed {r['seed']} (ensemble member)"
    if r["smoothing"]:
        return f"label smoothing a={r['smoothing']:g} ({r['chunks']} chunks)"
    if r["objective"] != "pointwise":
        return f"{r['objective']} objective ({r['chunks']} chunks)"
    return f"labels: {r['chunks'] * args.chunk_problems} problems"


def bon_report(args: argparse.Namespace, results: dict[str, Any]) -> dict[str, Any]:
    pool_path = args.run_dir / "bon" / "pool.json"
    if not pool_path.is_file():
        return {}
    data = json.loads(pool_path.read_text())
    right = [[r["right"] for r in rows] for rows in data["rows"]]
    ns = [n for n in (1, 4, 16, 64) if n <= args.bon_samples]
    scored = {p.stem: json.loads(p.read_text()) for p in sorted((args.run_dir / "bon").glob("orm-*.json"))}
    members = [f"orm-c{args.chunks}-mixed-s{s}" for s in range(3)]
    if all(m in scored for m in members):
        scored["orm ensemble (mixed x3)"] = [[statistics.mean(v) for v in zip(*(scored[m][i] for m in members))]
                                             for i in range(len(right))]
    out: dict[str, Any] = {"problems": len(right), "samples": args.bon_samples, "tokens": data["tokens"], "by_critic": {}}
    for name, scores in scored.items():
        out["by_critic"][name] = {str(n): best_of_n_accuracy(right, scores, n) for n in ns}
    out["pass_at_n"] = {str(n): statistics.mean(float(any(r[g : g + n])) for r in right for g in range(0, len(r) - n + 1, n)) for n in ns}
    out["majority_vote"] = {str(n): majority(data["rows"], n) for n in ns}
    return out


def majority(rows: list[list[dict[str, Any]]], n: int) -> float:
    """Accuracy of the most common answer key in each disjoint group of n samples (ties: the first seen)."""
    values = []
    for samples in rows:
        for g in range(0, len(samples) - n + 1, n):
            group = samples[g : g + n]
            counts = Counter(s["answer"] for s in group if s["answer"] is not None)
            if not counts:
                values.append(0.0)
                continue
            top = max(counts.values())
            key = next(s["answer"] for s in group if s["answer"] is not None and counts[s["answer"]] == top)
            values.append(float(next(s["right"] for s in group if s["answer"] == key)))
    return statistics.mean(values)


def write_report(args: argparse.Namespace, summary: dict[str, Any], notes: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    RESULTS.mkdir(parents=True, exist_ok=True)
    rows = summary["arms"]
    lines = ["# Critics that rank: levers on within-problem AUROC (bench/critic_levers.py)", "",
             f"Policy: the AlphaLLM bench's base ({args.sft_steps} SFT steps, Countdown step format). Labels: "
             f"{args.samples} answers per problem, {args.rollouts} rollouts per unfinished prefix, chunks of "
             f"{args.chunk_problems} train problems; held out: {args.val_problems} other train problems with "
             f"{args.val_samples} answers each. {args.epochs} epochs, lr {args.lr:g}, batch {args.batch_size}.", "",
             *[f"- {n}" for n in notes], ""]
    for kind in KINDS:
        mine = [r for r in rows if r["kind"] == kind]
        lines += [f"## {kind}", "", markdown_table(
            ["lever", "label tokens", "train examples", "within-problem AUROC", "vs one chunk", "pooled AUROC", "Brier", "seconds"],
            [[r["lever"], f"{r['label_tokens']:,}", r["train_examples"], r["within_auroc"], r["delta_vs_base"], r["auroc"],
              r["brier"], r["seconds"]] for r in mine])]
    bon = summary["best_of_n"]
    if bon:
        ns = list(bon["pass_at_n"])
        lines += ["## Best-of-N by the learned ORM", "",
                  f"{bon['problems']} other train problems, {bon['samples']} samples each ({bon['tokens']:,} tokens); "
                  "accuracy of the top-scored answer over disjoint groups of N.", "",
                  markdown_table(["selection", *[f"N={n}" for n in ns]],
                                 [[name, *[v[n] for n in ns]] for name, v in bon["by_critic"].items()]
                                 + [["majority vote", *[bon["majority_vote"][n] for n in ns]],
                                    ["pass@N (an oracle)", *[bon["pass_at_n"][n] for n in ns]]])]
    (RESULTS / "critic_levers.md").write_text("\n".join(lines) + "\n")
    (RESULTS / "critic_levers.json").write_text(json.dumps(repo_relative_paths(summary), indent=2) + "\n")
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    for ax, kind in zip(axes, KINDS):
        curve = sorted((r for r in rows if r["kind"] == kind and r["lever"].startswith("labels")), key=lambda r: r["label_tokens"])
        ax.plot([r["label_tokens"] for r in curve], [r["within_auroc"] for r in curve], "o-", label="pointwise, more labels")
        for r in rows:
            if r["kind"] == kind and not r["lever"].startswith(("labels", "seed")):
                ax.scatter([r["label_tokens"]], [r["within_auroc"]], label=r["lever"])
        ax.axhline(0.85, color="grey", linestyle=":", label="target 0.85")
        ax.set_xscale("log")
        ax.set_title(kind)
        ax.set_xlabel("labelling tokens")
        ax.set_ylabel("within-problem AUROC (held out)")
        ax.legend(fontsize=6)
    save_figure(fig, RESULTS / "critic_levers.png")
    log(f"wrote {RESULTS / 'critic_levers.md'}, .json, .png")
