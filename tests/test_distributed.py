"""Data-parallel training (torchrun's environment, gloo on CPU): two processes give the update one
process gives on the same batch, and a two-process run whose rank 0 wrote the checkpoints resumes to
the weights of an uninterrupted run. Ranks are launched as torchrun would (RANK, WORLD_SIZE,
MASTER_ADDR, MASTER_PORT), as plain subprocesses."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import torch
from safetensors.torch import load_file

from selfimprove.config import OptimConfig
from selfimprove.policy.load import load_hf
from selfimprove.rollout.episode import collate
from selfimprove.rollout.single import demonstration_episode
from selfimprove.tasks import make_task
from selfimprove.train.learner import Learner
from selfimprove.train.objectives import sft_objective

TASK = {"name": "countdown", "params": {"num_numbers": 2, "max_number": 9, "min_target": 1, "max_target": 18}}

STEP = textwrap.dedent("""
    import sys, torch
    from selfimprove.train import distributed
    sys.path.insert(0, {tests!r})
    from test_distributed import one_step
    ranks = distributed.setup()
    params = one_step()
    torch.save(params, f"{out}/rank{{ranks.rank}}.pt")
""")

RUN = textwrap.dedent("""
    import json, sys
    from selfimprove.config import SFTRecipe
    from selfimprove.methods.sft import run_sft
    recipe = SFTRecipe.model_validate(json.loads({recipe!r}))
    crash = int(sys.argv[1])

    def on_step(done, metrics):
        if done == crash:
            raise SystemExit(3)

    run_sft(recipe, on_step if crash else None)
""")


def one_step() -> dict[str, torch.Tensor]:
    """One SFT learner step on a fixed batch of 8 demonstrations in 4 micro-batches."""
    torch.manual_seed(0)
    policy = load_hf("tiny:small", seed=0)
    task = make_task(TASK["name"], TASK["params"])
    episodes = [demonstration_episode(policy, task, p, group=i) for i, p in enumerate(task.problems("train", 8))]
    learner = Learner(policy, OptimConfig(lr=1e-2, micro_batch_size=2), 10)
    learner.step(collate(episodes, policy.pad_id), sft_objective)
    return {k: v.detach().clone() for k, v in policy.module.state_dict().items()}


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(script: str, world: int, *args: str) -> list[int]:
    port = _port()
    procs = []
    for rank in range(world):
        env = {**os.environ, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world), "MASTER_ADDR": "127.0.0.1",
               "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1", "SELFIMPROVE_DIST_BACKEND": "gloo"}
        procs.append(subprocess.Popen([sys.executable, "-c", script, *args], env=env, stderr=subprocess.PIPE, text=True))
    codes = []
    for p in procs:
        _, err = p.communicate(timeout=600)
        codes.append(p.returncode)
        assert p.returncode in (0, 3), err[-3000:]
    return codes


def test_two_processes_give_the_update_of_one(tmp_path: Path) -> None:
    single = one_step()
    _launch(STEP.format(tests=str(Path(__file__).parent), out=str(tmp_path)), 2)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    for name, value in single.items():
        assert torch.equal(ranks[0][name], ranks[1][name]), name  # every rank applies the same update
        assert torch.allclose(ranks[0][name], value, atol=1e-6), name  # and it is one process's update


def _recipe(run_dir: Path) -> str:
    return json.dumps({"run_dir": str(run_dir), "model": {"path": "tiny:small"}, "task": TASK, "steps": 4, "batch_size": 8,
                       "optim": {"lr": 1e-2, "micro_batch_size": 2}, "schedule": {"checkpoint_every": 2},
                       "eval": {"num_problems": 2, "max_new_tokens": 4}})


def test_checkpoints_written_by_rank_0_resume_exactly(tmp_path: Path) -> None:
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    _launch(RUN.format(recipe=_recipe(whole)), 2, "0")
    assert _launch(RUN.format(recipe=_recipe(resumed)), 2, "3") == [3, 3]  # both ranks stop after step 3
    assert [p.name for p in (resumed / "checkpoints").iterdir()] == ["step_0000002"]
    _launch(RUN.format(recipe=_recipe(resumed)), 2, "0")
    a, b = load_file(str(whole / "final" / "model.safetensors")), load_file(str(resumed / "final" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((whole / "summary.json").read_text())["steps"] == 4
    assert not (whole / "ranks" / "rank1" / "checkpoints").exists()  # only rank 0 writes the run
    steps = [json.loads(line)["step"] for line in (resumed / "metrics.jsonl").read_text().splitlines()]
    assert steps[:4] == [1, 2, 3, 4]


GRPO = textwrap.dedent("""
    import json, os, sys
    from selfimprove.policy import hf
    original = hf.HFPolicy.__init__

    def seeded_by_rank(self, *args, **kwargs):  # each rank's sampling stream differs, as on a GPU it may
        original(self, *args, **kwargs)
        self.generator.manual_seed(1000 + int(os.environ.get("RANK", "0")))

    hf.HFPolicy.__init__ = seeded_by_rank
    from selfimprove.config import RLRecipe
    from selfimprove.methods.rl import run_rl
    summary = run_rl(RLRecipe.model_validate(json.loads({recipe!r})))
    print(json.dumps({{"rank": int(os.environ.get("RANK", "0")), "steps": summary["steps"]}}))
""")


def _grpo_recipe(run_dir: Path) -> str:
    return json.dumps({"run_dir": str(run_dir), "model": {"path": "tiny:small"}, "task": TASK, "steps": 4, "prompts_per_step": 4,
                       "sampling": {"n": 4, "max_new_tokens": 6}, "optim": {"lr": 1e-2, "micro_batch_size": 4},
                       "max_sampled_tokens": 150, "eval": {"num_problems": 2, "max_new_tokens": 4},
                       "loss": {"rollout_correction": {"kind": "tis"}, "entropy_coef": 0.05}})  # weights move every step


def test_two_ranks_seeded_differently_give_the_one_process_grpo_run(tmp_path: Path) -> None:
    """GRPO over two processes whose sampling streams differ: rank 0 samples for both, so the run equals
    the one-process run (to float rounding of the summed gradients), and the token budget stops both
    ranks after the same step."""
    one, two = tmp_path / "one", tmp_path / "two"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RANK": "0"}
    single = subprocess.run([sys.executable, "-c", GRPO.format(recipe=_grpo_recipe(one))], env=env, capture_output=True,
                            text=True, timeout=600)
    assert single.returncode == 0, single.stderr[-3000:]
    _launch(GRPO.format(recipe=_grpo_recipe(two)), 2)
    a, b = load_file(str(one / "final" / "model.safetensors")), load_file(str(two / "final" / "model.safetensors"))
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    start = load_hf("tiny:small", seed=0).model.state_dict()
    assert any(not torch.allclose(start[k], a[k], atol=1e-4) for k in a)  # the runs did train
    rows_one = [json.loads(line) for line in (one / "metrics.jsonl").read_text().splitlines()]
    rows_two = [json.loads(line) for line in (two / "metrics.jsonl").read_text().splitlines()]
    assert [r["train/reward"] for r in rows_one if "train/reward" in r] == [r["train/reward"] for r in rows_two if "train/reward" in r]
    steps = json.loads((two / "summary.json").read_text())["steps"]
    assert steps == json.loads((one / "summary.json").read_text())["steps"] < 4  # the budget ended both runs early


def test_ranks_with_different_batches_stop_with_one_line(tmp_path: Path) -> None:
    """The learner compares a digest of each step's batch across ranks."""
    script = textwrap.dedent(f"""
        import os, sys, torch
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from selfimprove.train import distributed
        ranks = distributed.setup()
        digest = distributed.batch_digest([torch.tensor([1, 2, ranks.rank])])
        try:
            ranks.check_same(digest, "batch")
        except distributed.RanksDisagree as err:
            open(os.path.join({str(tmp_path)!r}, f"rank{{ranks.rank}}.txt"), "w").write(str(err))
    """)
    _launch(script, 2)
    message = (tmp_path / "rank0.txt").read_text()
    assert message == (tmp_path / "rank1.txt").read_text()
    assert message.startswith("data-parallel ranks 1 hold another batch than rank 0") and "\n" not in message


def test_a_failure_on_rank_0_while_sampling_stops_every_rank_and_a_flag_of_one_rank_stops_all(tmp_path: Path) -> None:
    """No rank waits for ever on a rank 0 that raised; a stop decision of one rank is every rank's."""
    script = textwrap.dedent(f"""
        import os, sys, torch
        from selfimprove.train import distributed

        class Engine:
            def generate(self, prompts, params, generator=None):
                raise ValueError("the pool is gone")

        ranks = distributed.setup()
        out = {{"any": ranks.any_rank(ranks.rank == 1), "none": ranks.any_rank(False)}}
        try:
            distributed.SharedSampling(Engine(), ranks).generate(["p"], None)
        except Exception as err:
            out["error"] = f"{{type(err).__name__}}: {{err}}"
        open(os.path.join({str(tmp_path)!r}, f"rank{{ranks.rank}}.txt"), "w").write(repr(out))
    """)
    _launch(script, 2)
    zero, one = [eval((tmp_path / f"rank{r}.txt").read_text()) for r in range(2)]
    assert zero["any"] is one["any"] is True and zero["none"] is one["none"] is False
    assert zero["error"] == "ValueError: the pool is gone"
    assert one["error"] == "RunFailure: rank 0 failed while sampling for every rank: ValueError: the pool is gone"
