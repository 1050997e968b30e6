"""Several cache processes (`torchrun --nproc_per_node=N interp cache ...`, gloo on CPU).

The token plan is computed identically by every rank; shards are dealt out in contiguous blocks
(rank r gets shards [r*K/N, (r+1)*K/N)), each rank writes its own shard files and records them in
the one manifest under a file lock. Since a shard's bytes depend only on the plan, the result is
the same cache a single process writes.
"""

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch.distributed as dist


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def shard_block(self, n_shards: int) -> range:
        """This rank's contiguous block of shard indices."""
        return range(self.rank * n_shards // self.world, (self.rank + 1) * n_shards // self.world)


@contextmanager
def process_group() -> Iterator[Ranks]:
    """The ranks of this process: a gloo group when launched by torchrun with WORLD_SIZE > 1,
    else a single rank. The group is torn down on exit if this call created it."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        yield Ranks()
        return
    created = not dist.is_initialized()
    if created:
        dist.init_process_group(backend="gloo")
    try:
        yield Ranks(rank=dist.get_rank(), world=dist.get_world_size())
    finally:
        if created:
            dist.destroy_process_group()
