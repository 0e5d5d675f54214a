"""Critics that rank (issue 26, item 2): which levers lift the learned critics' within-problem AUROC.

The policy is the AlphaLLM bench's base (the tiny model after 600 SFT steps on Countdown's step
format, `bench/alphallm.py`'s `stage_base`, shared through `--base-dir`). It labels its own rollouts
exactly as `selfimprove critic train` does (`critics.labels.build_labels`: `--samples` answers per
problem, `--rollouts` Monte-Carlo completions per distinct unfinished step prefix) in chunks of
`--chunk-problems` train problems, each chunk's labelling tokens counted. The held-out set is other
train problems (`--val-first`, never the test split), labelled the same way with `--val-samples`
answers each so that most problems have both right and wrong examples; any pool example of a held-out
problem is dropped.

Arms (each trains one critic from the policy's trunk with `critics.train.train_critic`; `--epochs`
over its examples; AUROC on the held-out problems' raw labels):
- labels: 1, 2, 4 and all `--chunks` chunks, pointwise (MSE for the value, BCE for PRM and ORM);
- objective on all chunks: pairwise (Bradley-Terry within a problem), mixed (pointwise + pairwise) and
  listwise (per problem, -log of the softmax mass on its right examples; listed last);
- label smoothing by rollout count on all chunks (`training.label_smoothing` 1: Beta(1, 1));
- ensembling: the mean score of the mixed arm's critic and two more seeds of it;
- the trunk: the same size initialised at random instead of from the policy (all chunks, pointwise); and
  a larger one (`--larger`, the `medium` preset: 10.7M parameters against 2.65M) trained exactly as the
  base was (the same SFT steps on the same demonstrations), so that it starts from what a larger policy
  knows of the task (all chunks, pointwise);
- balanced classes: each kind's rarer class (label >= 0.5 or below) drawn again until even
  (`critics.labels.balance_labels`, `training.balance`; all chunks, pointwise; listed last);
- the most labels: `--extra-chunks` chunks (32: 16,384 problems), pointwise, for `--extra-kinds` (the ORM);
then best-of-N on other train problems (`--bon-first`): `--bon-samples` answers each, scored by the
1-chunk pointwise ORM, the all-chunk mixed ORM and the ensemble; accuracy of the top-scored answer at
N = 1, 4, 16, 64 averaged over disjoint groups of N samples (pass@N and majority vote beside it).

Resumable: labels per chunk, one JSON per arm, the best-of-N pool; processes started side by side
share the arms (each takes the next arm no live process holds). Results: `bench/results/critic_levers.{md,json,png}`.

    .venv/bin/python bench/critic_levers.py labels              # the base, the label chunks, held-out labels
    OMP_NUM_THREADS=1 .venv/bin/python bench/critic_levers.py arms &
    OMP_NUM_THREADS=1 .venv/bin/python bench/critic_levers.py arms
    .venv/bin/python bench/critic_levers.py bon && .venv/bin/python bench/critic_levers.py report
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

import alphallm  # noqa: E402  (bench/alphallm.py: the shared SFT base)
from common import claim, line_bar, log  # noqa: E402
from critic_levers_report import KINDS, stage_report  # noqa: E402
from selfimprove.critics.labels import (Example, balance_labels, build_labels, estimate_prefixes, load_labels, save_labels,  # noqa: E402
                                       smooth_labels)
from selfimprove.critics.metrics import within_problem_auroc  # noqa: E402
from selfimprove.critics.model import CRITICS, critic_input, load_critic  # noqa: E402
from selfimprove.critics.recipe import CriticTraining, LabelsConfig  # noqa: E402
from selfimprove.critics.train import total_steps, train_critic  # noqa: E402
from selfimprove.policy.base import CountingSampler, SamplingParams  # noqa: E402
from selfimprove.policy.hf import HFPolicy  # noqa: E402
from selfimprove.policy.tiny import build_tiny_model  # noqa: E402
from selfimprove.rollout.state import StepRuleConfig  # noqa: E402
from selfimprove.tasks.plugins import make_task  # noqa: E402

SFT_POOL = alphallm.SFT_POOL  # train problems 0 .. SFT_POOL - 1 made the base; labels start after them


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("stage", choices=["labels", "arms", "ceiling", "bon", "report", "all"])
    ap.add_argument("--ceiling-rollouts", type=int, default=32, help="fresh rollouts per held-out prefix for the noise ceiling")
    ap.add_argument("--run-dir", type=Path, default=Path("runs/critic-levers"))
    ap.add_argument("--base-dir", type=Path, default=Path("runs/alphallm-bench"), help="where the shared SFT base lives")
    ap.add_argument("--sft-steps", type=int, default=600)
    ap.add_argument("--chunk-problems", type=int, default=512)
    ap.add_argument("--chunks", type=int, default=8)
    ap.add_argument("--extra-chunks", type=int, default=32, help="a further pointwise arm on this many chunks ...")
    ap.add_argument("--extra-kinds", nargs="*", default=["orm"], help="... for these kinds (the ORM: its curve rose most)")
    ap.add_argument("--samples", type=int, default=4, help="answers per pool problem")
    ap.add_argument("--rollouts", type=int, default=8, help="Monte-Carlo completions per unfinished prefix")
    ap.add_argument("--val-first", type=int, default=400_000)
    ap.add_argument("--val-problems", type=int, default=256)
    ap.add_argument("--val-samples", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--bon-first", type=int, default=500_000)
    ap.add_argument("--bon-problems", type=int, default=200)
    ap.add_argument("--bon-samples", type=int, default=64)
    ap.add_argument("--larger", default="medium", choices=["medium", "large"],
                    help="the larger trunk's preset (SFT'd as the base; its own folder under the run folder)")
    ap.add_argument("--only", default=None, help="arms stage: only arms whose name contains this")
    return ap.parse_args(argv)


def labels_config(args: argparse.Namespace, problems: int, samples: int) -> LabelsConfig:
    return LabelsConfig(num_problems=max(2, problems), samples_per_problem=samples, rollouts_per_prefix=args.rollouts,
                        max_new_tokens=alphallm.MAX_ANSWER, problems_per_batch=128, max_rollout_rows=1024)


def step_rule():
    return StepRuleConfig(**alphallm.STEP).rule()


def base_model(args: argparse.Namespace) -> str:
    return alphallm.stage_base(argparse.Namespace(sft_steps=args.sft_steps), args.base_dir)


def larger_model(args: argparse.Namespace) -> str:
    """The `--larger` preset after the base's SFT (same steps, pool and recipe): the larger trunk."""
    return alphallm.stage_base(argparse.Namespace(sft_steps=args.sft_steps), args.run_dir / f"trunk-{args.larger}", args.larger)


def label_set(args: argparse.Namespace, policy: HFPolicy, name: str, first: int, problems: int, samples: int) -> dict[str, Any]:
    """Label `problems` train problems from `first` (once: the file and its meta are reused)."""
    out = args.run_dir / "labels"
    meta_path = out / f"{name}.json"
    if meta_path.is_file():
        return json.loads(meta_path.read_text())
    task = make_task(alphallm.TASK["name"], alphallm.TASK["params"])
    config = labels_config(args, problems, samples)
    counting = CountingSampler(policy)
    generator = torch.Generator().manual_seed(first)
    began = time.time()
    with line_bar(f"labels {name}", problems, every=60) as on_step:
        examples = build_labels(counting, task, task.distinct_problems("train", problems, start=first), step_rule(), config,
                                generator=generator, on_problems=lambda done: on_step(done, {}))
    save_labels(out / f"{name}.jsonl", examples)
    meta = {"name": name, "first_problem": first, "problems": problems, "samples_per_problem": samples,
            "rollouts_per_prefix": args.rollouts, "tokens": counting.tokens, "seconds": round(time.time() - began, 1),
            "examples": dict(Counter(e.kind for e in examples))}
    meta_path.write_text(json.dumps(meta, indent=2))
    log(f"labels {name}: {meta['examples']} from {counting.tokens:,} tokens in {meta['seconds']:.0f}s")
    return meta


def stage_labels(args: argparse.Namespace) -> None:
    policy = HFPolicy.load(base_model(args), seed=0)
    label_set(args, policy, "val", args.val_first, args.val_problems, args.val_samples)
    for c in range(max(args.chunks, args.extra_chunks)):
        label_set(args, policy, f"chunk{c}", SFT_POOL + c * args.chunk_problems, args.chunk_problems, args.samples)


def arms(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every arm: (name, kind, chunks, objective, smoothing, seed)."""
    out = []
    for kind in KINDS:
        sizes = sorted({1, 2, 4, args.chunks} & set(range(1, args.chunks + 1)))
        out += [dict(kind=kind, chunks=c, objective="pointwise", smoothing=0.0, seed=0) for c in sizes]
        out += [dict(kind=kind, chunks=args.chunks, objective=o, smoothing=0.0, seed=0) for o in ("pairwise", "mixed")]
        if kind != "orm":  # the ORM's labels are exact verdicts: nothing to smooth
            out.append(dict(kind=kind, chunks=args.chunks, objective="pointwise", smoothing=1.0, seed=0))
        out += [dict(kind=kind, chunks=args.chunks, objective="mixed", smoothing=0.0, seed=s) for s in (1, 2)]
    for a in out:
        a["trunk"] = "policy"
    # listed after the first arms (their result files keep their names): a trunk of the same
    # size initialised at random instead of from the policy
    out += [dict(kind=kind, chunks=args.chunks, objective="pointwise", smoothing=0.0, seed=0, trunk="scratch") for kind in KINDS]
    if args.extra_chunks > args.chunks:  # the most labels, where the curve still rises
        out += [dict(kind=kind, chunks=args.extra_chunks, objective="pointwise", smoothing=0.0, seed=0, trunk="policy")
                for kind in args.extra_kinds]
    out += [dict(kind=kind, chunks=args.chunks, objective="listwise", smoothing=0.0, seed=0, trunk="policy") for kind in KINDS]
    out += [dict(kind=kind, chunks=args.chunks, objective="pointwise", smoothing=0.0, seed=0, trunk=args.larger) for kind in KINDS]
    out += [dict(kind=kind, chunks=args.chunks, objective="pointwise", smoothing=0.0, seed=0, trunk="policy", balance=True)
            for kind in KINDS]
    for a in out:
        a["name"] = (f"{a['kind']}-c{a['chunks']}-{a['objective']}" + (f"-smooth{a['smoothing']:g}" if a["smoothing"] else "")
                     + ("-balanced" if a.get("balance") else "")
                     + ("" if a["trunk"] == "policy" else f"-{a['trunk']}") + f"-s{a['seed']}")
    return out


def bon_problems(args: argparse.Namespace) -> list[Any]:
    task = make_task(alphallm.TASK["name"], alphallm.TASK["params"])
    return task.distinct_problems("train", args.bon_problems, start=args.bon_first)


def pool(args: argparse.Namespace, kind: str, chunks: int, exclude: set[str]) -> tuple[list[Example], int]:
    examples, tokens = [], 0
    for c in range(chunks):
        examples += [e for e in load_labels(args.run_dir / "labels" / f"chunk{c}.jsonl") if e.kind == kind and e.group not in exclude]
        tokens += json.loads((args.run_dir / "labels" / f"chunk{c}.json").read_text())["tokens"]
    return examples, tokens


def run_arm(args: argparse.Namespace, policy: HFPolicy, arm: dict[str, Any], held_out: list[Example]) -> dict[str, Any]:
    path = args.run_dir / "arms" / f"{arm['name']}.json"
    if path.is_file():
        return json.loads(path.read_text())
    exclude = {e.group for e in held_out} | {p.prompt for p in bon_problems(args)}  # never train on judged problems
    train, tokens = pool(args, arm["kind"], arm["chunks"], exclude)
    if arm.get("balance"):
        train = balance_labels(train, arm["seed"])
    train = smooth_labels(train, arm["smoothing"], prm_label="hard")
    config = CriticTraining(epochs=args.epochs, objective=arm["objective"], batch_size=args.batch_size,
                            optim={"lr": args.lr, "micro_batch_size": 64, "warmup_steps": 10, "schedule": "cosine",
                                   "min_lr_ratio": 0.1})
    torch.manual_seed(arm["seed"])
    trunk = policy
    if arm.get("trunk") == "scratch":  # the policy's architecture and tokenizer, fresh random weights
        fresh, _ = build_tiny_model("default", seed=arm["seed"])
        trunk = HFPolicy(fresh, policy.tokenizer, seed=arm["seed"])
    elif arm.get("trunk") == args.larger:
        trunk = HFPolicy.load(larger_model(args), seed=arm["seed"])
        if trunk.tokenizer.get_vocab() != policy.tokenizer.get_vocab():  # it reads the policy's token ids as they are
            raise ValueError(f"the {args.larger} trunk's tokenizer differs from the policy's: its critic cannot read the labels")
    critic = CRITICS[arm["kind"]].from_policy(trunk, batch_size=256)
    began = time.time()
    with line_bar(arm["name"], total_steps(train, config, arm["seed"]), keys=("train/loss", "eval/within_auroc"), every=60) as on_step:
        report = train_critic(critic, train, held_out, config, seed=arm["seed"], on_step=on_step)
    scores = critic.score_ids([e.token_ids for e in held_out])
    critic.save(args.run_dir / "critics" / arm["name"], tokenizer_of=policy)  # the test-time bench loads the best
    result = {**arm, "label_tokens": tokens, "train_examples": len(train), "seconds": round(time.time() - began, 1),
              "before": report["before"], "after": report["after"], "held_out_scores": scores}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result))
    log(f"{arm['name']}: within-problem AUROC {report['after']['within_auroc']:.3f} (pooled {report['after']['auroc']:.3f}) "
        f"from {len(train)} examples, {result['seconds']:.0f}s")
    return result


def stage_arms(args: argparse.Namespace) -> None:
    policy = HFPolicy.load(base_model(args), seed=0)
    val = load_labels(args.run_dir / "labels" / "val.jsonl")
    for arm in arms(args):
        if args.only is not None and args.only not in arm["name"]:
            continue
        with claim(args.run_dir / "arms" / f"{arm['name']}.claim") as mine:  # processes share the arms (common.claim)
            if mine:
                run_arm(args, policy, arm, [e for e in val if e.kind == arm["kind"]])


def stage_ceiling(args: argparse.Namespace) -> dict[str, Any]:
    """The label-noise ceiling: the held-out within-problem AUROC of an oracle that scores each value and
    PRM example by a fresh `--ceiling-rollouts` estimate of the same prefix (finished answers by their
    exact outcome). Held-out labels come from a few rollouts each, so even the true probability ranks
    them imperfectly: a learned critic is judged against this, not against 1."""
    path = args.run_dir / "labels" / "ceiling.json"
    if path.is_file():
        return json.loads(path.read_text())
    policy = HFPolicy.load(base_model(args), seed=0)
    task = make_task(alphallm.TASK["name"], alphallm.TASK["params"])
    problems = task.distinct_problems("train", args.val_problems, start=args.val_first)
    index = {p.prompt: i for i, p in enumerate(problems)}
    val = [e for e in load_labels(args.run_dir / "labels" / "val.jsonl") if e.kind in ("value", "prm")]
    prompt_lengths = {g: len(policy.encode_prompt(g)) for g in index}

    def prefix(e: Example) -> tuple[int, tuple[int, ...]]:
        """(problem, completion ids so far) of a held-out example: its critic input less the prompt."""
        return index[e.group], e.token_ids[prompt_lengths[e.group]:]

    todo = sorted({prefix(e) for e in val if e.rollouts > 0})
    config = labels_config(args, len(problems), args.samples).model_copy(update={"rollouts_per_prefix": args.ceiling_rollouts})
    counts = dict(zip(todo, estimate_prefixes(policy, task, problems, todo, config, generator=torch.Generator().manual_seed(7))))
    out: dict[str, Any] = {"rollouts": args.ceiling_rollouts}
    for kind in ("value", "prm"):
        mine = [e for e in val if e.kind == kind]
        scores = []
        for e in mine:
            if e.rollouts == 0:
                scores.append(e.label)
            else:
                right, total = counts[prefix(e)]
                scores.append(right / total)
        out[kind] = within_problem_auroc(scores, [e.label for e in mine], [e.group for e in mine])
        # the pairs whose both sides are Monte-Carlo estimates (the rest have an exact finished side, which
        # the oracle scores by its verdict), and every score, so the ceiling can be checked pair by pair
        mc = [(sc, e) for sc, e in zip(scores, mine) if e.rollouts > 0]
        out[f"{kind}_monte_carlo_only"] = within_problem_auroc([sc for sc, _ in mc], [e.label for _, e in mc], [e.group for _, e in mc])
        out[f"{kind}_scores"] = [round(sc, 4) for sc in scores]
    path.write_text(json.dumps(out, indent=2))
    log(f"label-noise ceiling ({args.ceiling_rollouts} fresh rollouts per prefix): value {out['value']:.3f}, prm {out['prm']:.3f}")
    return out


def stage_bon(args: argparse.Namespace) -> None:
    """Sample the best-of-N pool once and score it with each ORM arm (one file of scores per critic)."""
    out = args.run_dir / "bon"
    out.mkdir(parents=True, exist_ok=True)
    pool_path = out / "pool.json"
    policy = HFPolicy.load(base_model(args), seed=0)
    task = make_task(alphallm.TASK["name"], alphallm.TASK["params"])
    problems = bon_problems(args)
    if not pool_path.is_file():
        params = SamplingParams(n=args.bon_samples, temperature=1.0, max_new_tokens=alphallm.MAX_ANSWER)
        counting = CountingSampler(policy)
        rows: list[list[dict[str, Any]]] = [[] for _ in problems]
        generator = torch.Generator().manual_seed(args.bon_first)
        eos = list(policy.eos_ids)
        for start in range(0, len(problems), 8):
            prompts = [policy.encode_prompt(p.prompt) for p in problems[start : start + 8]]
            for c in counting.generate_ids(prompts, params, generator=generator):
                i = start + c.prompt_index
                ids, _ = c.without_eos(eos)
                text = policy.detokenize(ids)
                verdict = task.verify(problems[i], text)
                rows[i].append({"ids": critic_input(list(prompts[c.prompt_index]) + list(ids), finished=True, eos_ids=eos),
                                "right": verdict.correct, "answer": task.answer_key(problems[i], text)})
        pool_path.write_text(json.dumps({"tokens": counting.tokens, "rows": rows}))
    data = json.loads(pool_path.read_text())
    for critic_dir in sorted((args.run_dir / "critics").glob("orm-*")):
        path = out / f"{critic_dir.name}.json"
        if path.is_file():
            continue
        critic = load_critic(critic_dir, batch_size=256)
        flat = [r["ids"] for rows in data["rows"] for r in rows]
        scores = critic.score_ids(flat)
        it = iter(scores)
        path.write_text(json.dumps([[next(it) for _ in rows] for rows in data["rows"]]))
        log(f"best-of-N pool scored by {critic_dir.name}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    args.run_dir.mkdir(parents=True, exist_ok=True)
    if args.stage in ("labels", "all"):
        stage_labels(args)
    if args.stage in ("arms", "all"):
        stage_arms(args)
    if args.stage in ("ceiling", "all"):
        stage_ceiling(args)
    if args.stage in ("bon", "all"):
        stage_bon(args)
    if args.stage in ("report", "all"):
        stage_report(args, arms(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
