"""Data parallelism: the few collective operations the dictionary math needs.

Launch with `torchrun --nproc_per_node=N -m ...` (gloo on CPU, nccl on GPU). Every function is the
identity when `torch.distributed` is not initialised, so single-process code is the same code.

Conventions that make N ranks match one process at the same global batch B:
- every rank reads the same global batch stream and keeps rows [rank * B/N, (rank + 1) * B/N),
  so data order, resume position and b_dec initialisation are those of the single process (a
  model stream split into rank parts computes only those rows, each rank from its own part of
  the token plan: the single process it matches reads the parts' rows joined in rank order);
- losses are means over the local rows; DDP averages gradients, which gives the global mean;
- BatchTopK keeps the global top k*B (see `activations.batch_topk_cutoff`), not k*B/N per rank;
- AuxK's normaliser and the dead-latent counters use all-reduced (global) statistics.
"""

import os

import torch
import torch.distributed as dist
from torch import Tensor


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def init_from_env() -> torch.device:
    """Join the process group that `torchrun` describes in the environment (if any) and return
    this rank's device."""
    if "WORLD_SIZE" not in os.environ or int(os.environ["WORLD_SIZE"]) == 1:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if torch.cuda.is_available():
        local_rank = int(os.environ["LOCAL_RANK"])
        torch.cuda.set_device(local_rank)
        dist.init_process_group("nccl")
        return torch.device("cuda", local_rank)
    dist.init_process_group("gloo")
    return torch.device("cpu")


def shutdown() -> None:
    if is_distributed():
        dist.destroy_process_group()


def local_rows(batch: Tensor) -> Tensor:
    """This rank's share of a global batch."""
    n = world_size()
    if n == 1:
        return batch
    if batch.shape[0] % n:
        raise ValueError(f"global batch {batch.shape[0]} is not divisible by {n} ranks")
    per_rank = batch.shape[0] // n
    return batch[rank() * per_rank : (rank() + 1) * per_rank]


def all_reduce_sum(tensor: Tensor) -> Tensor:
    """Sum over ranks (a new tensor; the input is untouched)."""
    if not is_distributed():
        return tensor
    out = tensor.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out


def all_reduce_max(tensor: Tensor) -> Tensor:
    if not is_distributed():
        return tensor
    out = tensor.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.MAX)
    return out


def all_gather_cat(tensor: Tensor) -> Tensor:
    """Concatenate equal-shaped tensors of all ranks along dim 0 (rank order)."""
    if not is_distributed():
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts)


def average_gradients(parameters: list[torch.nn.Parameter]) -> None:
    """Replace each gradient by its mean over ranks, in one flat all-reduce (what DDP's reducer
    does, without its bucketing; the dictionary has only four parameter tensors)."""
    if not is_distributed():
        return
    grads = [p.grad for p in parameters if p.grad is not None]
    flat = torch.cat([g.flatten() for g in grads])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= world_size()
    offset = 0
    for grad in grads:
        grad.copy_(flat[offset : offset + grad.numel()].view_as(grad))
        offset += grad.numel()


def barrier() -> None:
    if is_distributed():
        dist.barrier()
