"""Single-process or torchrun (DistributedDataParallel) training with the same script.

Under `torchrun --nproc_per_node=N` (or several nodes: `--nnodes`, a c10d rendezvous), RANK /
WORLD_SIZE / LOCAL_RANK are set: we join a process group (nccl on CUDA, gloo on CPU). Otherwise
everything is a no-op with rank 0 of 1.

Gradient synchronisation (wrap): the cascade stages leave parameters out of some steps' graphs (the
temporal layers on image steps, parameters only a published checkpoint's layout has), which plain DDP
refuses at the second step. The modes, measured in docs/PERF.md (change 15):
  find_unused  DDP(find_unused_parameters=True) (default): exact; a parameter no rank used keeps no
               gradient, as in one process, so Adam leaves it alone.
  allreduce    no DDP: after backward, one coalesced all-reduce of the gradients that exist (every rank
               has the same set, since the step's image/video decision is shared); exact, no overlap of
               communication with the backward pass.
  zero_term    DDP, and the loss gets 0 * (a sum over every parameter): every parameter always has a
               gradient (zero when unused), so Adam's momentum keeps moving unused parameters: NOT what
               one process does (kept for the measurement only).
  static       DDP(static_graph=True): correct only when every step uses the same parameters (a stage
               with p_ignore_time = 0); refused otherwise.
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
    """Tear the process group down. Drop the DDP wrappers first (`del ddp` / `del sync`): a DDP reducer keeps the
    gloo group alive past destroy_process_group until the interpreter's finalisation, where its worker threads
    can abort the process ("terminate called without an active exception", SIGABRT) after a finished run, and
    the other node's torchrun then waits out its exit barrier."""
    if d.enabled and dist.is_initialized():
        import gc
        gc.collect()                      # the dropped wrappers' reducers (and their hold on the group) go now
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


MODES = ("find_unused", "allreduce", "zero_term", "static")


class GradSync:
    """The training model as the loss sees it (`.module`: the model to call), and what to do after
    backward (`after_backward()`), for one of MODES (see the module docstring)."""

    def __init__(self, model: torch.nn.Module, d: Dist, mode: str = "find_unused"):
        if mode not in MODES:
            raise ValueError(f"unknown DDP mode '{mode}' (choose from {', '.join(MODES)})")
        self.model, self.d, self.mode = model, d, mode
        self.params = [q for q in model.parameters() if q.requires_grad]
        self.module = model
        if not d.enabled:
            return
        from torch.nn.parallel import DistributedDataParallel as DDP

        dev = [d.device.index] if d.device.type == "cuda" else None
        if mode == "find_unused":
            self.module = DDP(model, device_ids=dev, find_unused_parameters=True)
        elif mode in ("zero_term", "static"):
            self.module = DDP(model, device_ids=dev, static_graph=mode == "static")
        else:  # allreduce: same start on every rank
            for t in list(model.parameters()) + list(model.buffers()):
                dist.broadcast(t.data, 0)

    def loss(self, loss: torch.Tensor) -> torch.Tensor:
        """zero_term: loss + 0 * sum of every parameter (all of them in every graph)."""
        if self.mode == "zero_term" and self.d.enabled:
            loss = loss + 0.0 * sum(q.reshape(-1)[0] for q in self.params)
        return loss

    @torch.no_grad()
    def after_backward(self) -> None:
        if self.mode != "allreduce" or not self.d.enabled:
            return
        grads = [q.grad for q in self.params if q.grad is not None]
        if not grads:
            return
        from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

        flat = _flatten_dense_tensors(grads)
        dist.all_reduce(flat)
        flat /= self.d.world
        for g, r in zip(grads, _unflatten_dense_tensors(flat, grads)):
            g.copy_(r)


def broadcast_object(obj, d: Dist):
    """Rank 0's picklable object on every rank."""
    if not d.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0, device=d.device if d.device.type == "cuda" else None)
    return box[0]


@torch.no_grad()
def broadcast_training_state(d: Dist, model: torch.nn.Module, ema_model: torch.nn.Module | None,
                             opt: torch.optim.Optimizer, state: dict) -> dict:
    """After rank 0 alone may have resumed: rank 0's counters, weights, EMA weights and Adam state on
    every rank, so the run folder need not be on a filesystem the other nodes can read."""
    if not d.enabled:
        return state
    state = broadcast_object(state, d)
    mods = [model] + ([ema_model] if ema_model is not None else [])
    for m in mods:
        for t in list(m.parameters()) + list(m.buffers()):
            dist.broadcast(t.data, 0)
    for group in opt.param_groups:
        group["lr"] = broadcast_object(group["lr"], d)
    params = [q for g in opt.param_groups for q in g["params"]]
    for q in params:
        keys = broadcast_object(sorted(opt.state[q].keys()) if q in opt.state else [], d)
        if not keys:
            continue
        st = opt.state[q] if q in opt.state else {}
        shapes = broadcast_object({k: (tuple(v.shape), v.dtype, str(v.device)) for k, v in st.items()}
                                  if d.main else None, d)
        new = {}
        for k in keys:
            shape, dtype, where = shapes[k]
            v = st[k] if d.main else torch.zeros(shape, dtype=dtype,
                                                 device=q.device if where != "cpu" else "cpu")
            if v.device.type == "cpu" and d.device.type == "cuda":
                tmp = v.to(d.device)
                dist.broadcast(tmp, 0)
                v = tmp.cpu() if not d.main else v
            else:
                dist.broadcast(v, 0)
            new[k] = v
        opt.state[q] = new
    return state


def check_resume(d: Dist, local_step: int, run) -> None:
    """Call before writing anything. Stops every rank when some rank sees a checkpoint in its run folder
    newer than rank 0's (e.g. rank 0 landed on a node without the folder): training on would silently
    restart the run. Ranks that see no checkpoint at all are fine (they get rank 0's state by broadcast)."""
    if not d.enabled:
        return
    t = torch.tensor([int(local_step)], dtype=torch.int64, device=d.device)
    steps = [torch.zeros_like(t) for _ in range(d.world)]
    dist.all_gather(steps, t)
    ahead = [(r, int(v)) for r, v in enumerate(steps) if int(v) > int(steps[0])]
    if ahead:
        r, v = ahead[0]
        raise SystemExit(f"error: rank {r} sees a checkpoint at step {v} in {run}, but rank 0 sees step "
                         f"{int(steps[0])}: put the run folder on a filesystem every node shares, or give the node "
                         "holding it rank 0 (torchrun --node_rank=0 with --master_addr, the static rendezvous)")
