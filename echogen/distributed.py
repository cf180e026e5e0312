"""Single-process or torchrun (DistributedDataParallel) training with the same script.

Under `torchrun --nproc_per_node=N`, RANK/WORLD_SIZE/LOCAL_RANK are set: we join a process group
(nccl on CUDA, gloo on CPU). Otherwise everything is a no-op with rank 0 of 1.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        """Only rank 0 writes files, logs and progress bars."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def setup(device_name: str | None = None) -> Dist:
    from echogen.device import pick_device

    if "RANK" not in os.environ or int(os.environ.get("WORLD_SIZE", "1")) == 1:
        return Dist(device=pick_device(device_name))
    rank, world, local = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_RANK"])
    device = pick_device(device_name)
    if device.type == "cuda":
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=rank, world_size=world)
    return Dist(rank, world, local, device)


def all_mean(x: float, d: Dist) -> float:
    """Average a Python float over ranks (for logging)."""
    if not d.enabled:
        return float(x)
    t = torch.tensor([float(x)], dtype=torch.float64, device=d.device)
    dist.all_reduce(t)
    return float(t.item()) / d.world


def barrier(d: Dist) -> None:
    if d.enabled:
        dist.barrier()


def cleanup(d: Dist) -> None:
    if d.enabled and dist.is_initialized():
        dist.destroy_process_group()


def run_logger(path, d: Dist):
    """log(msg): rank 0 appends a timestamped line to `path` and prints it above the progress bars;
    other ranks do nothing."""
    import time

    from tqdm import tqdm

    f = open(path, "a") if d.main else None

    def log(msg):
        if f is not None:
            line = f"{time.strftime('%Y-%m-%d %H:%M:%S')} {msg}"
            tqdm.write(line)
            f.write(line + "\n")
            f.flush()
    return log
