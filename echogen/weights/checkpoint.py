"""Training checkpoints without pickle: model, EMA and Adam state as safetensors, counters as JSON."""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from echogen.weights.bundle import WeightsError, load_state_strict, load_tensors, read_manifest, save_tensors


def init_from_bundle(bundle, stage_name: str, *modules) -> Path:
    """Fine-tune from a weights bundle alone: load the bundle's weights of `stage_name` into each module
    (e.g. a fresh run's model and EMA), strictly. Returns the file read."""
    man = read_manifest(bundle)
    fname = man.get("stages", {}).get(stage_name)
    if fname is None:
        raise WeightsError(f"{bundle}: the bundle has no weights for stage '{stage_name}'")
    tensors, _, _ = load_tensors(Path(bundle) / fname, kind="stage")
    for m in modules:
        load_state_strict(m, tensors, str(Path(bundle) / fname))
    return Path(bundle) / fname


def save_checkpoint(run: Path, model, ema_model, opt: torch.optim.Optimizer, state: dict, config: dict,
                    moments_dtype: torch.dtype | None = None) -> None:
    """moments_dtype (e.g. torch.bfloat16): Adam's moments stored in that precision, for a checkpoint meant
    to be committed (half the size; they are cast back to the parameters' dtype on resume)."""
    ck = Path(run) / "ckpt"
    save_tensors(ck / "model.safetensors", model.state_dict(), "checkpoint", config)
    save_tensors(ck / "ema.safetensors", ema_model.state_dict(), "checkpoint", config)
    # Adam state, flattened: p{index}.{exp_avg|exp_avg_sq|step}
    flat = {}
    params = [p for g in opt.param_groups for p in g["params"]]
    for i, p in enumerate(params):
        for k, v in opt.state.get(p, {}).items():
            v = v if torch.is_tensor(v) else torch.tensor(v)
            flat[f"p{i}.{k}"] = v.to(moments_dtype) if moments_dtype is not None and v.is_floating_point() and v.ndim else v
    save_tensors(ck / "optim.safetensors", flat, "optimizer", {"lr": [g["lr"] for g in opt.param_groups]})
    tmp = ck / "state.json.tmp"
    tmp.write_text(json.dumps(state, indent=2))
    os.replace(tmp, ck / "state.json")  # written last: its presence marks a complete checkpoint


def load_checkpoint(run: Path, model, ema_model, opt: torch.optim.Optimizer) -> dict | None:
    """Restore in place; returns the saved counters, or None when RUN has no checkpoint."""
    ck = Path(run) / "ckpt"
    if not (ck / "state.json").is_file():
        return None
    t, _, _ = load_tensors(ck / "model.safetensors")
    load_state_strict(model, t, str(ck / "model.safetensors"))
    t, _, _ = load_tensors(ck / "ema.safetensors")
    load_state_strict(ema_model, t, str(ck / "ema.safetensors"))
    flat, _, _ = load_tensors(ck / "optim.safetensors")
    params = [p for g in opt.param_groups for p in g["params"]]
    for i, p in enumerate(params):
        st = {k.split(".", 1)[1]: (v.to(p.device, p.dtype) if v.ndim else v)
              for k, v in flat.items() if k.split(".", 1)[0] == f"p{i}"}
        if st:
            opt.state[p] = st
    return json.loads((ck / "state.json").read_text())
