"""Data-parallel training across processes with torch.distributed (`torchrun --nproc_per_node N`, gloo
on CPU, NCCL on GPUs).

Every rank runs the same driver: the same problems, the same rollouts (the engine's seeded stream is the
same on every rank; to spread *generation*, use `engine.kind: ray`), the same evaluation. The learner
splits each batch's micro-batches across ranks (rank r takes micro-batches r, r + N, ...), and the
gradients are summed over ranks before the optimizer step, so every rank applies the identical update.
Summing (not DDP's averaging) is what keeps the update equal to one process's: the objectives
normalise each micro-batch's loss by the whole batch (`Learner.Norms`), so the full batch's gradient
is the sum of the micro-batches' gradients. It is written here, not with `DistributedDataParallel`,
because that wrapper averages and hooks one `forward` of one module, while the learner calls the HF
module several ways (shared-prefix forward, value head, reference scoring). Rank 0 writes everything
(logs, checkpoints, the final model, the summary) and holds the run folder's lock; the other ranks'
buffers go to `RUN_DIR/ranks/rank<r>/`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterable

import torch

__all__ = ["Ranks", "setup"]


@dataclass(frozen=True)
class Ranks:
    rank: int
    world: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            torch.distributed.barrier()

    def sum_gradients(self, params: Iterable[torch.nn.Parameter]) -> None:
        """Sum every parameter's gradient over the ranks (one flat all-reduce); a rank that had no
        micro-batch contributes zeros."""
        if self.world == 1:
            return
        params = [p for p in params if p.requires_grad]
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        flat = torch.cat([p.grad.reshape(-1) for p in params])
        torch.distributed.all_reduce(flat, op=torch.distributed.ReduceOp.SUM)
        offset = 0
        for p in params:
            n = p.grad.numel()
            p.grad.copy_(flat[offset : offset + n].view_as(p.grad))
            offset += n

    def sum_stats(self, stats: dict[str, float]) -> dict[str, float]:
        """Sum the ranks' statistics (each already weighted by its share of the batch) over the union of
        their keys, so every rank sends the same vector."""
        if self.world == 1:
            return stats
        every: list[list[str]] = [[] for _ in range(self.world)]
        torch.distributed.all_gather_object(every, sorted(stats))  # a rank without micro-batches has none
        keys = sorted({k for keys in every for k in keys})
        stats = {k: stats.get(k, 0.0) for k in keys}
        vector = torch.tensor([float(stats[k]) for k in keys], dtype=torch.float64)
        torch.distributed.all_reduce(vector, op=torch.distributed.ReduceOp.SUM)
        return dict(zip(keys, vector.tolist()))


SINGLE = Ranks(0, 1)


def setup() -> Ranks:
    """The process's rank: from torchrun's environment (`WORLD_SIZE` > 1 joins the process group
    once), else a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return SINGLE
    if not torch.distributed.is_initialized():
        backend = "nccl" if torch.cuda.is_available() and os.environ.get("SELFIMPROVE_DIST_BACKEND") != "gloo" else "gloo"
        torch.distributed.init_process_group(backend=backend)
    return Ranks(torch.distributed.get_rank(), torch.distributed.get_world_size())


def current() -> Ranks:
    """The ranks of an initialised process group, or a single process."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return Ranks(torch.distributed.get_rank(), torch.distributed.get_world_size())
    return SINGLE
