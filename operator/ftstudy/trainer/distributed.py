"""A trial on several devices: data parallel, one process per device, started by ``ftstudy-trainer --processes N``
(``ftstudy.trainer.launch``; ``torchrun`` sets up the same environment, but loses the trainer's exit codes).

Why not wrap the model in ``DistributedDataParallel``: a LoRA trial trains a few million parameters at most, so one
all-reduce of their flattened gradients per optimiser step costs little, and doing it by hand keeps the step's
arithmetic the single process's. Every rank draws the same shuffled micro-batches (the same seed) and takes its
share of each one's examples; its loss is its answer tokens' cross-entropy summed and divided by the answer tokens
of the *whole* micro-batch (all ranks'), so the summed gradients are exactly those of the one-process step, up to
the order of floating-point additions. The global batch, the learning-rate schedule and the data order do not
depend on the number of processes.

Rank 0 does everything else a trial does (scoring, checkpoints, records, reports); the other ranks train beside it
and, once per step, learn from it whether to go on (``World.decide``), so that a decision, a SIGTERM on any rank or
a stop by the study ends every rank at the same step. A rank that dies ends the others through the launcher.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch

# Long enough for rank 0's scoring (the others wait in the next step's collective meanwhile).
COLLECTIVE_TIMEOUT = timedelta(hours=2)


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def share(self, items: list[Any]) -> list[Any]:
        """This rank's part of a micro-batch: every ``size``-th example from ``rank`` on."""
        return items[self.rank :: self.size] if self.size > 1 else items

    def total(self, value: float) -> float:
        """The sum of ``value`` over ranks."""
        if self.size == 1:
            return value
        tensor = torch.tensor([value], dtype=torch.float64)
        torch.distributed.all_reduce(tensor)
        return float(tensor.item())

    def sum_gradients(self, params: list[torch.nn.Parameter]) -> None:
        """Add up the ranks' gradients, in one flattened all-reduce (a rank with no example gives zeros)."""
        if self.size == 1:
            return
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([g.reshape(-1) for g in grads]).to(torch.float32)
        torch.distributed.all_reduce(flat)
        offset = 0
        for param, grad in zip(params, grads, strict=True):
            count = grad.numel()
            param.grad = flat[offset : offset + count].view_as(grad).to(grad.dtype)
            offset += count

    def decide(self, stop: bool) -> bool:
        """Once per step on every rank: rank 0's verdict (stop here, or go on) or any rank's SIGTERM, for all."""
        if self.size == 1:
            return stop
        tensor = torch.tensor([1 if stop else 0])
        torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.MAX)
        return bool(tensor.item())

    def broadcast(self, value: Any) -> Any:
        """Rank 0's ``value`` on every rank (the trial's hyperparameters, the checkpoint's place)."""
        if self.size == 1:
            return value
        box = [value]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, value: Any) -> list[Any]:
        """Every rank's ``value``, in rank order (each rank's random generators, for an exact resume)."""
        if self.size == 1:
            return [value]
        out: list[Any] = [None] * self.size
        torch.distributed.all_gather_object(out, value)
        return out

    def barrier(self) -> None:
        if self.size > 1:
            torch.distributed.barrier()


ALONE = World()  # one process: every collective is the identity


def join() -> World:
    """The world the launcher set up for this process (``RANK``, ``WORLD_SIZE``), or one process alone. GPUs: NCCL, one
    device per local rank; CPUs: gloo (the same code path, which the tests run)."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    torch.distributed.init_process_group(backend, timeout=COLLECTIVE_TIMEOUT)
    return World(torch.distributed.get_rank(), torch.distributed.get_world_size())


def leave(world: World) -> None:
    if world.size > 1 and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
