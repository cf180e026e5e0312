"""The training data stream under data parallelism: every rank's share of each global batch, and per-sample
seeds that do not depend on the rank or the batch a sample lands in (so N ranks x batch B == one process
at batch N*B, and a resumed run continues the very same stream)."""
from __future__ import annotations

import torch

from echogen.rng import mix_seed


class GlobalBatches(torch.utils.data.Sampler):
    """An endless stream of this rank's share of each global batch, from `start_step` on.

    Global batch s holds positions s*G .. s*G + G - 1 (G = batch * world) of the sequence of per-epoch
    permutations of the dataset (epoch e's permutation seeded by (seed, e)); rank r gets the slots
    r*batch .. (r+1)*batch - 1. Each index is (item index, item seed), the item seed a function of
    (seed, step, slot) only: N ranks at batch B see and draw exactly what one process at batch N*B does,
    and a run resumed at step s continues the very same stream. Use with SeededItems."""

    def __init__(self, n: int, batch: int, world: int = 1, rank: int = 0, seed: int = 0, start_step: int = 0):
        if n < 1:
            raise ValueError("empty dataset")
        self.n, self.batch, self.world, self.rank = int(n), int(batch), int(world), int(rank)
        self.seed, self.start_step = int(seed), int(start_step)
        self._perm = (-1, None)

    def _index(self, pos: int) -> int:
        e, j = divmod(pos, self.n)
        if self._perm[0] != e:
            self._perm = (e, torch.randperm(self.n, generator=torch.Generator().manual_seed(mix_seed(self.seed, e))))
        return int(self._perm[1][j])

    def step_items(self, step: int) -> list[tuple[int, int]]:
        """This rank's (item index, item seed) pairs of global batch `step`."""
        g = self.batch * self.world
        slots = range(self.rank * self.batch, (self.rank + 1) * self.batch)
        return [(self._index(step * g + k), mix_seed(self.seed, step, k)) for k in slots]

    def __iter__(self):
        step = self.start_step
        while True:
            yield from self.step_items(step)
            step += 1


class SeededItems(torch.utils.data.Dataset):
    """Wraps an EchoNetDataset for GlobalBatches: item (i, seed) re-seeds the dataset's generator (its
    random clip start and conditioning frame) with `seed` first, and carries the seed along as "seed"."""

    def __init__(self, base):
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, key):
        i, seed = key
        self.base.gen.manual_seed(int(seed))
        item = dict(self.base[int(i)])
        item["seed"] = torch.tensor(int(seed), dtype=torch.int64)
        return item
