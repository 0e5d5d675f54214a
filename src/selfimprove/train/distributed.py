"""Data-parallel training across processes with torch.distributed (`torchrun --nproc_per_node N`, gloo
on CPU, NCCL on GPUs).

Every rank runs the same driver: the same problems, the same rollouts, the same evaluation. Rollouts are
sampled on rank 0 and broadcast (`SharedSampling`), so a GPU's non-deterministic kernels or a rank's
own random stream cannot give ranks different batches (each would normalise by its own, and a token
budget could stop one rank before the others, leaving them in an all-reduce); every learner step also
compares a digest of the batch's sampled content across ranks and stops with one line if they differ,
and the driver's decision to stop is taken by all ranks together (`any_rank`). To spread *generation*, use
`engine.kind: ray`. The learner
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

import atexit
import hashlib
import math
import os
from dataclasses import dataclass
from typing import Any, Iterable

import torch

from selfimprove.errors import RanksDisagree, RunFailure
from selfimprove.policy.base import SamplerWrapper

__all__ = ["RanksDisagree", "Ranks", "SharedSampling", "batch_digest", "setup"]


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
        """Sum the ranks' statistics (each already weighted by its share of the batch; maxima, named
        `*_max`, take the largest) over the union of their keys, so every rank sends the same vectors."""
        if self.world == 1:
            return stats
        every: list[list[str]] = [[] for _ in range(self.world)]
        torch.distributed.all_gather_object(every, sorted(stats))  # a rank without micro-batches has none
        keys = sorted({k for keys in every for k in keys})
        out: dict[str, float] = {}
        for op, names in ((torch.distributed.ReduceOp.SUM, [k for k in keys if not k.endswith("_max")]),
                          (torch.distributed.ReduceOp.MAX, [k for k in keys if k.endswith("_max")])):
            if not names:
                continue
            fill = 0.0 if op == torch.distributed.ReduceOp.SUM else -math.inf
            vector = torch.tensor([float(stats.get(k, fill)) for k in names], dtype=torch.float64)
            torch.distributed.all_reduce(vector, op=op)
            out.update(zip(names, vector.tolist()))
        return out


    def any_rank(self, flag: bool) -> bool:
        """True on every rank when it is true on any (a stop decision all ranks must share)."""
        if self.world == 1:
            return flag
        value = torch.tensor([1.0 if flag else 0.0], dtype=torch.float64, device=self._device())
        torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.MAX)
        return bool(value.item() > 0)

    def check_same(self, digest: str, what: str) -> None:
        """Stop with one line when the ranks' digests of `what` differ."""
        if self.world == 1:
            return
        every: list[str] = [""] * self.world
        torch.distributed.all_gather_object(every, digest)
        if len(set(every)) > 1:
            differ = [r for r, d in enumerate(every) if d != every[0]]
            raise RanksDisagree(f"data-parallel ranks {', '.join(map(str, differ))} hold another {what} than rank 0: "
                                "every rank must train on the same batch (sampling is broadcast from rank 0)")

    def broadcast(self, value: Any) -> Any:
        """Rank 0's `value` on every rank (any picklable object)."""
        if self.world == 1:
            return value
        box = [value if self.is_main else None]
        torch.distributed.broadcast_object_list(box, src=0, device=self._device())
        return box[0]

    @staticmethod
    def _device() -> torch.device:
        backend = torch.distributed.get_backend()
        return torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else torch.device("cpu")


def batch_digest(tensors: Iterable[torch.Tensor]) -> str:
    """SHA-256 of tensors' bytes (what was sampled: ids, masks, rewards), to compare across ranks."""
    digest = hashlib.sha256()
    for t in tensors:
        digest.update(str(tuple(t.shape)).encode())
        digest.update(t.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


class SharedSampling(SamplerWrapper):
    """An engine whose sampling runs on rank 0 and is broadcast to the other ranks; everything else
    (training, saving, the tokenizer) is the wrapped engine's, on every rank."""

    def __init__(self, inner: Any, ranks: Ranks) -> None:
        super().__init__(inner)
        self.ranks = ranks

    def generate(self, prompts: Any, params: Any, *, generator: Any = None) -> Any:
        return self._shared(lambda: self.inner.generate(prompts, params, generator=generator))

    def generate_ids(self, prompt_ids: Any, params: Any, *, generator: Any = None) -> Any:
        return self._shared(lambda: self.inner.generate_ids(prompt_ids, params, generator=generator))

    def _shared(self, sample: Any) -> Any:
        """Rank 0 samples and sends the result, or its failure, so no rank waits for ever on a rank 0 that
        raised: the others stop with one line naming rank 0's error."""
        if not self.ranks.is_main:
            ok, value = self.ranks.broadcast(None)
            if not ok:
                raise RunFailure(f"rank 0 failed while sampling for every rank: {value}")
            return value
        try:
            result = sample()
        except Exception as err:
            self.ranks.broadcast((False, f"{type(err).__name__}: {(str(err).splitlines() or [''])[0]}"))
            raise
        self.ranks.broadcast((True, result))
        return result


SINGLE = Ranks(0, 1)


def setup() -> Ranks:
    """The process's rank: from torchrun's environment (`WORLD_SIZE` > 1 joins the process group
    once), else a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return SINGLE
    if not torch.distributed.is_initialized():
        backend = "nccl" if torch.cuda.is_available() and os.environ.get("SELFIMPROVE_DIST_BACKEND") != "gloo" else "gloo"
        if backend == "nccl":  # each rank on its own GPU (collectives of objects use the current device)
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        torch.distributed.init_process_group(backend=backend)
        atexit.register(_leave)  # a rank that ends (also by an error) leaves the group cleanly
    return Ranks(torch.distributed.get_rank(), torch.distributed.get_world_size())


def _leave() -> None:
    """Destroy the process group at exit: left to the interpreter's teardown, gloo's threads can abort the
    process ("terminate called without an active exception") and turn a clean exit code into 134."""
    try:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    except Exception:  # noqa: BLE001 - exiting anyway
        pass


def current() -> Ranks:
    """The ranks of an initialised process group, or a single process."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return Ranks(torch.distributed.get_rank(), torch.distributed.get_world_size())
    return SINGLE
