"""Convert published checkpoints into EchoGen weights bundles (safetensors + manifest).

* EchoDiffusion cascades (Reynaud et al. 2023): `merged.pt` + `config.yaml` made by the authors' fork of
  imagen-pytorch 1.22.2. Each unet becomes a stage with network "imagen3d" (echogen/nets/imagen3d.py);
  the EMA weights are converted (the paper sampled with them). Every tensor of the chosen weights must
  fill exactly one parameter: anything missing, extra or mis-shaped is an error naming it. The network is
  the one the authors' scripts built from config.yaml: they read it with OmegaConf, and Unet3D then
  repeats a YAML list per level, so `layer_cross_attns: [False, False, True]` means cross-attention at
  EVERY level (authors_unet_kwargs); the resolved options go into the manifest.
* EchoNet-Dynamic's EF regressor `r2plus1d_18_32_2_pretrained.pt` (echogen/nets/echonet_r2plus1d.py).

Checkpoints are read with torch.load(weights_only=True): a file that needs arbitrary Python objects
(code) to unpickle is refused, never executed.
"""
from __future__ import annotations

import dataclasses
import pickle
import re
import zipfile
from pathlib import Path

import torch

from echogen.config import CascadeConfig, DiffusionConfig, StageConfig, imagen_unet_mirror
from echogen.weights.bundle import WeightsError, file_sha256, load_state_strict, save_tensors, update_manifest

LICENCE_NOTE = ("Weights by their authors, not by EchoGen: EchoDiffusion checkpoints are distributed under "
                "GPL-2.0 (HReynaud/EchoDiffusion); keep their licence when you share this bundle.")
ECHONET_NOTE = "EchoNet-Dynamic's published EF regressor (Ouyang et al., Nature 2020); see its licence."

# Unet3D options the converted network supports only at these values (anything else changes the network)
FIXED_UNET_OPTIONS = dict(layer_attns=False, use_linear_attn=False, use_linear_cross_attn=False,
                          cosine_sim_attn=False, self_cond=False, temporal_strides=1, init_cross_embed=True,
                          cross_embed_downsample=False, attn_pool_text=True, init_conv_to_final_conv_residual=False,
                          use_global_context_attn=True, scale_skip_connection=True, final_resnet_block=True,
                          combine_upsample_fmaps=False, pixel_shuffle_upsample=True, time_causal_attn=True,
                          cond_on_text=True, init_dim=None, cond_dim=None, channels_out=None, out_dim=None,
                          resize_mode="nearest")
IGNORED_UNET_OPTIONS = {"lowres_cond", "channels", "text_embed_dim", "dropout", "num_image_tokens", "ff_mult",
                        "layer_attns_depth", "layer_attns_add_text_cond", "init_conv_kernel_size",
                        "cross_embed_downsample_kernel_sizes"}
MAPPED_UNET_OPTIONS = {"dim", "dim_mults", "num_resnet_blocks", "layer_cross_attns", "attend_at_middle",
                       "memory_efficient", "max_text_len", "cond_images_channels", "attn_heads", "attn_dim_head",
                       "resnet_groups", "num_time_tokens", "learned_sinu_pos_emb_dim", "attn_pool_num_latents",
                       "init_cross_embed_kernel_sizes", "time_rel_pos_bias_depth", "final_conv_kernel_size"}
# How the authors' code hands a YAML list to Unet3D. Every EchoDiffusion script builds the unets as
# `Unet3D(**v, lowres_cond=i > 0)` with `v` from `OmegaConf.load(config.yaml)`, so a list arrives as an
# omegaconf ListConfig: not a list or tuple, so the fork's `cast_tuple(value, num_levels)` repeats the WHOLE
# value once per level instead of reading it per level. Checked option by option against the fork (branch
# distillation) under omegaconf 2.2.3 (the authors' pin) and 2.4.0, bench/make_parity_fixtures.py
# writes the outcomes into tests/fixtures/published/imagen_tiny.json ("list_probes"):
#   the list's truth value, the same at every level (an empty list = False everywhere):
LIST_AT_EVERY_LEVEL = {"layer_cross_attns", "layer_attns"}
#   read element by element (the same as a plain list):
LIST_ITERATED = {"dim_mults", "init_cross_embed_kernel_sizes", "cross_embed_downsample_kernel_sizes"}
#   used only by layer self-attention (off in every convertible network): a list changes nothing
LIST_UNUSED = {"layer_attns_depth", "ff_mult"}
#   everything else (num_resnet_blocks, resnet_groups, temporal_strides, attn_heads, attn_dim_head, ...):
#   the authors' Unet3D raises a TypeError for a list, so no checkpoint can have been trained with one.
# Unet3D's own defaults (imagen-pytorch 1.22.2 / the fork) for the options that shape the network: an option
# a config leaves out takes these, not Imagen3DOptions' (which describe the published networks)
UNET3D_DEFAULTS = dict(dim_mults=[1, 2, 4, 8], num_resnet_blocks=1, layer_cross_attns=True, attend_at_middle=True,
                       memory_efficient=False, max_text_len=256, cond_images_channels=0, attn_heads=8,
                       attn_dim_head=64, resnet_groups=8, num_time_tokens=2, learned_sinu_pos_emb_dim=16,
                       attn_pool_num_latents=32, init_cross_embed_kernel_sizes=[3, 7, 15], time_rel_pos_bias_depth=2,
                       final_conv_kernel_size=3)
STAGE_NAMES = {1: ["base"], 2: ["base", "spatiotemporal"], 4: ["base", "temporal1", "temporal2", "spatial"]}
PAPER_NAMES = {(112,): "1SCM", (56, 112): "2SCM", (56, 56, 56, 112): "4SCM"}


# ---------------------------------------------------------------------------------------------
# Reading files
# ---------------------------------------------------------------------------------------------

def load_checkpoint(path) -> dict:
    """torch.load(weights_only=True) with one-line errors for truncated, foreign or code-carrying files."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"checkpoint not found: {path}")
    if not zipfile.is_zipfile(path):
        with open(path, "rb") as f:
            if f.read(1) != b"\x80":  # a legacy torch.save file starts with a pickle protocol opcode
                raise WeightsError(f"{path}: not a readable PyTorch checkpoint (neither torch.save's zip format "
                                   f"nor its legacy pickle format: truncated, or another kind of file?)")
    try:
        try:  # memory-map large zip-format checkpoints; legacy (non-zip) files cannot be mapped
            obj = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as e:
            if "mmap" not in str(e):
                raise
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if "weights only" in str(e).lower() or "unsupported global" in str(e).lower():
            raise WeightsError(f"{path}: refused: the file holds pickled Python objects, not just tensors "
                               f"(torch.load(weights_only=True) rejected it; EchoGen never runs pickled code)") from None
        raise WeightsError(f"{path}: not a readable PyTorch checkpoint ({first})") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise WeightsError(f"{path}: not a readable PyTorch checkpoint (truncated or corrupt? {first})") from None
    if not isinstance(obj, dict):
        raise WeightsError(f"{path}: expected a dict checkpoint, found {type(obj).__name__}")
    return obj


def read_yaml(path) -> dict:
    import yaml
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"config not found: {path} (the config.yaml published beside merged.pt)")
    try:
        cfg = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise WeightsError(f"{path}: invalid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(cfg, dict) or not isinstance(cfg.get("unets"), dict) or not cfg["unets"]:
        raise WeightsError(f"{path}: not an EchoDiffusion config (no 'unets' section)")
    return cfg


# ---------------------------------------------------------------------------------------------
# EchoDiffusion config -> CascadeConfig
# ---------------------------------------------------------------------------------------------

def _per_unet(value, n: int, key: str) -> list:
    v = list(value) if isinstance(value, (list, tuple)) else [value] * n
    if len(v) != n:
        raise WeightsError(f"config: imagen.{key} has {len(v)} entries for {n} unets")
    return v


def authors_unet_kwargs(u: dict, index: int) -> tuple[dict, list[str]]:
    """The Unet3D options of one `unets.unetN` section as the authors' scripts pass them (OmegaConf
    lists; see LIST_AT_EVERY_LEVEL above): (options with every list resolved, notes on what changed)."""
    out, notes = {}, []
    if "dim" not in u:
        raise WeightsError(f"config: unet{index + 1} has no dim (Unet3D requires it)")
    u = {**UNET3D_DEFAULTS, **u}
    levels = len(u["dim_mults"])
    for k, v in u.items():
        if not isinstance(v, (list, tuple)) or k in LIST_ITERATED:
            out[k] = v
        elif k == "layer_attns" and len(v):
            raise WeightsError(f"config: unet{index + 1}.layer_attns={list(v)!r}: the authors' code (OmegaConf "
                               f"ListConfig through Unet3D's cast_tuple) builds self-attention at EVERY level from "
                               f"a non-empty list; EchoGen's imagen3d network has no layer self-attention")
        elif k in LIST_AT_EVERY_LEVEL:
            out[k] = [bool(v)] * levels
            if list(v) != out[k]:
                notes.append(f"unet{index + 1}.{k}: {list(v)} in the config; the authors' code (OmegaConf "
                             f"ListConfig through Unet3D's cast_tuple) built {out[k]}, one truth value per level")
        elif k in LIST_UNUSED:
            out[k] = v
        else:
            raise WeightsError(f"config: unet{index + 1}.{k}={list(v)!r}: a list here cannot be built by the "
                               f"authors' code (OmegaConf passes it to Unet3D as a ListConfig, which it cannot "
                               f"use as {k}); give one value")
    return out, notes


def unet_options(u: dict, index: int, channels: int, text_embed_dim: int) -> dict:
    """One `unets.unetN` section (already through authors_unet_kwargs) -> imagen3d network options."""
    from echogen.nets.imagen3d import Imagen3DOptions
    for k, v in u.items():
        if k == "layer_attns" and isinstance(v, list) and not any(v):
            continue                                            # resolved to no self-attention at any level
        if k in FIXED_UNET_OPTIONS and v != FIXED_UNET_OPTIONS[k]:
            raise WeightsError(f"config: unet{index + 1}.{k}={v!r} is not supported by EchoGen's imagen3d "
                               f"network (only {FIXED_UNET_OPTIONS[k]!r})")
        if k not in FIXED_UNET_OPTIONS and k not in IGNORED_UNET_OPTIONS and k not in MAPPED_UNET_OPTIONS:
            raise WeightsError(f"config: unet{index + 1}.{k} is not a known Unet3D option")
    opts = {k: v for k, v in u.items() if k in MAPPED_UNET_OPTIONS}
    opts.update(lowres_cond=index > 0, channels=channels, text_embed_dim=text_embed_dim)
    if not isinstance(opts.get("resnet_groups", 8), int):
        raise WeightsError(f"config: unet{index + 1}.resnet_groups must be one number")
    if not opts.get("cond_images_channels"):
        raise WeightsError(f"config: unet{index + 1}.cond_images_channels is 0 or absent: a network not conditioned "
                           f"on a frame is not an EchoDiffusion network EchoGen can run")
    try:
        o = Imagen3DOptions.from_dict(opts)
    except (TypeError, ValueError) as e:
        raise WeightsError(f"config: unet{index + 1}: {e}") from None
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(o).items()}


def _lowres_mode(resize_mode: str) -> str:
    """imagen's resize_mode for the low-res video -> StageConfig.lowres_resize (if EchoGen has it)."""
    if resize_mode == "trilinear":
        return "trilinear"
    try:
        from echogen.data.resample import upsample_video
        upsample_video(torch.zeros(1, 1, 2, 2, 2), 1.0, 2, 1.0, 2, resize_mode)
        return resize_mode
    except (ValueError, NotImplementedError, RuntimeError):
        return "trilinear"


def cascade_from_config(cfg: dict, name: str | None = None) -> tuple[CascadeConfig, list[str]]:
    """An EchoDiffusion config.yaml (as a dict) -> (CascadeConfig, notes). Missing keys take the
    defaults of the authors' code (e.g. `elucidated` absent -> EDM, as their sampling script assumes)."""
    notes = []
    unets = list(cfg["unets"].values())
    n = len(unets)
    im = dict(cfg.get("imagen") or {})
    if im.get("elucidated", True) is not True:
        raise WeightsError("config: imagen.elucidated is False: only EDM (ElucidatedImagen) cascades convert")
    if "elucidated" not in im:
        notes.append("config has no imagen.elucidated: taken as True (EDM), as the published models are")
    if not im.get("condition_on_text", True):
        raise WeightsError("config: imagen.condition_on_text is False: these networks need EF conditioning")
    sizes = _per_unet(im.get("image_sizes"), n, "image_sizes")
    tdf = _per_unet(im.get("temporal_downsample_factor", 1), n, "temporal_downsample_factor")
    ds = cfg.get("dataset") or {}
    fps, duration = float(ds.get("fps", 32)), float(ds.get("duration", 2.0))
    total = int(fps * duration)
    per = {k: _per_unet(im.get(k, d), n, k) for k, d in dict(
        num_sample_steps=32, S_churn=80, S_tmin=0.05, S_tmax=50, S_noise=1.003, sigma_min=0.002, sigma_max=80,
        sigma_data=0.5, rho=7, P_mean=-1.2, P_std=1.2, random_crop_sizes=None).items()}
    for k in ("sigma_min", "sigma_max", "sigma_data", "rho", "P_mean", "P_std"):
        if len(set(per[k])) != 1:
            raise WeightsError(f"config: imagen.{k} differs between unets ({per[k]}); EchoGen shares it")
    diffusion = DiffusionConfig(sigma_min=float(per["sigma_min"][0]), sigma_max=float(per["sigma_max"][0]),
                                sigma_data=float(per["sigma_data"][0]), rho=float(per["rho"][0]),
                                P_mean=float(per["P_mean"][0]), P_std=float(per["P_std"][0]))
    channels, text_dim = int(im.get("channels", 3)), int(im.get("text_embed_dim", 1))
    threshold = float(im.get("dynamic_thresholding_percentile", 0.95))
    dyn = _per_unet(im.get("dynamic_thresholding", True), n, "dynamic_thresholding")
    if not all(dyn):
        notes.append("config turns dynamic thresholding off for some unet: imagen then clamps x0 to [-1, 1]; "
                     "EchoGen runs those stages without thresholding")
    resize = im.get("resize_mode", "nearest")
    low_mode = _lowres_mode(resize)
    if n > 1 and low_mode != resize:
        notes.append(f"config resizes the low-res video with '{resize}'; this EchoGen has no such mode, "
                     f"'{low_mode}' is used (a small difference from the authors' sampling)")
    guidance = float((cfg.get("checkpoint") or {}).get("cond_scale", 5.0))
    lr = float((cfg.get("trainer") or {}).get("lr", 5e-4))
    stage_names = STAGE_NAMES.get(n, [f"stage{i + 1}" for i in range(n)])
    opts = []
    for i, u in enumerate(unets):
        if not isinstance(u, dict):
            raise WeightsError(f"config: unet{i + 1} is not a mapping")
        built, quirk = authors_unet_kwargs(u, i)
        notes += quirk
        opts.append(unet_options(built, i, channels, text_dim))
    stages = []
    for i, u in enumerate(unets):
        if total % tdf[i]:
            raise WeightsError(f"config: {total} frames do not divide by temporal_downsample_factor {tdf[i]}")
        stages.append(StageConfig(
            name=stage_names[i], size=int(sizes[i]), frames=total // int(tdf[i]), fps=fps / int(tdf[i]),
            unet=imagen_unet_mirror(opts[i]), network="imagen3d", network_options=opts[i],
            lowres_resize=low_mode, frame_resize="nearest", sampler="heun", steps=int(per["num_sample_steps"][i]), guidance=guidance,
            S_churn=float(per["S_churn"][i]), S_tmin=float(per["S_tmin"][i]), S_tmax=float(per["S_tmax"][i]),
            S_noise=float(per["S_noise"][i]), dynamic_threshold=threshold if dyn[i] else 0.0,
            lowres_aug_sample=float(im.get("lowres_sample_noise_level", 0.2)),
            p_drop_ef=float(im.get("cond_drop_prob", 0.1)), crop=int(per["random_crop_sizes"][i] or 0), lr=lr))
    name = name or PAPER_NAMES.get(tuple(int(s) for s in sizes), "EchoDiffusion")
    desc = f"EchoDiffusion {name} (converted): " + " -> ".join(f"{s.size}x{s.size}x{s.frames} @ {s.fps:g} fps" for s in stages)
    return CascadeConfig(name, stages, diffusion=diffusion, clip_seconds=duration, description=desc), notes


# ---------------------------------------------------------------------------------------------
# merged.pt -> per-stage state dicts
# ---------------------------------------------------------------------------------------------

def split_unet_weights(ckpt: dict, n: int, source: str = "ema") -> tuple[list[dict], dict]:
    """Per-unet state dicts from the EMA ('ema': '{i}.ema_model.*') or online ('model': 'unets.{i}.*')
    weights. Any key of that section that is not one unet's parameter is an error."""
    if source == "ema":
        sec = ckpt.get("ema")
        if not isinstance(sec, dict) or not sec:
            raise WeightsError("checkpoint has no EMA weights ('ema'); use --weights online to convert 'model'")
        pat = re.compile(r"^(\d+)\.ema_model\.(.+)$")
        skip = re.compile(r"^(\d+)\.(online_model\..+|initted|step)$")
    elif source == "online":
        sec = ckpt.get("model")
        if not isinstance(sec, dict) or not sec:
            raise WeightsError("checkpoint has no 'model' section")
        pat, skip = re.compile(r"^unets\.(\d+)\.(.+)$"), re.compile(r"^$")
    else:
        raise ValueError(f"unknown weights source '{source}' (ema | online)")
    parts, info = [dict() for _ in range(n)], {}
    for k, v in sec.items():
        m = pat.match(k)
        if m is None:
            s = skip.match(k)
            if s is None:
                raise WeightsError(f"checkpoint: unexpected key '{k}' in '{'ema' if source == 'ema' else 'model'}'")
            if s.group(2) == "step" and torch.is_tensor(v):
                info[f"ema_step_{s.group(1)}"] = int(v.reshape(-1)[0])
            if int(s.group(1)) >= n:
                raise WeightsError(f"checkpoint has weights for unet {int(s.group(1)) + 1} but the config lists {n}")
            continue
        i = int(m.group(1))
        if i >= n:
            raise WeightsError(f"checkpoint has weights for unet {i + 1} but the config lists {n} unet(s) ('{k}')")
        if not torch.is_tensor(v):
            raise WeightsError(f"checkpoint: '{k}' is not a tensor")
        parts[i][m.group(2)] = v
    for i, p in enumerate(parts):
        if not p:
            raise WeightsError(f"checkpoint has no {source} weights for unet {i + 1} (merged from fewer stages?)")
    return parts, info


def convert_imagen_checkpoint(checkpoint, config, out, fp16: bool = False, weights: str = "ema",
                              name: str | None = None) -> dict:
    """merged.pt + config.yaml -> an EchoGen bundle in `out`. Returns the manifest."""
    from echogen.diffusion.cascade import build_denoiser
    checkpoint, out = Path(checkpoint), Path(out)
    cfg = read_yaml(config)
    cascade, notes = cascade_from_config(cfg, name)
    ckpt = load_checkpoint(checkpoint)
    if "model" not in ckpt and "ema" not in ckpt:
        raise WeightsError(f"{checkpoint}: not an imagen-pytorch trainer checkpoint (no 'model' / 'ema'; "
                           f"top-level keys: {sorted(ckpt)[:6]})")
    parts, info = split_unet_weights(ckpt, len(cascade.stages), weights)
    files = {}
    for st, sd in zip(cascade.stages, parts):
        den = build_denoiser(st, cascade.diffusion)
        load_state_strict(den.net, sd, f"{checkpoint.name} unet '{st.name}'")   # every key, every shape
        tensors = {k: (v.half() if fp16 and v.is_floating_point() else v) for k, v in den.net.state_dict().items()}
        save_tensors(out / f"{st.name}.safetensors", tensors, "stage", dataclasses.asdict(st), preset=cascade.name)
        files[st.name] = f"{st.name}.safetensors"
    steps = ckpt.get("steps")
    prov = {"source": checkpoint.name, "sha256": file_sha256(checkpoint), "config": Path(config).name,
            "weights": weights, "imagen_pytorch_version": str(ckpt.get("version", "")),
            "training_steps": steps.tolist() if torch.is_tensor(steps) else steps,
            "licence": LICENCE_NOTE, "notes": notes, "fp16": bool(fp16), **info,
            # the architecture the authors' code built from config.yaml, per stage (what the weights fill)
            "resolved_unet_options": {st.name: st.network_options for st in cascade.stages}}
    return update_manifest(out, preset=cascade.name, cascade=cascade.to_dict(), stages=files, provenance=prov)


# ---------------------------------------------------------------------------------------------
# EchoNet-Dynamic regressor
# ---------------------------------------------------------------------------------------------

def convert_echonet_regressor(checkpoint, out, mean=None, std=None, fp16: bool = False,
                              filename: str = "echonet_regressor.safetensors") -> dict:
    """r2plus1d_18_32_2_pretrained.pt -> `out`/echonet_regressor.safetensors, named in the manifest as the
    bundle's regressor. mean / std: per-channel normalisation in [0, 1] units (1 or 3 numbers)."""
    from echogen.nets.echonet_r2plus1d import EchoNetConfig, EchoNetR2Plus1D, strip_prefix
    checkpoint, out = Path(checkpoint), Path(out)
    ckpt = load_checkpoint(checkpoint)
    state = ckpt.get("state_dict", None)
    if not isinstance(state, dict):
        raise WeightsError(f"{checkpoint}: not an EchoNet-Dynamic checkpoint (no 'state_dict'; "
                           f"top-level keys: {sorted(ckpt)[:6]})")
    try:
        state = strip_prefix(state)
    except ValueError as e:
        raise WeightsError(f"{checkpoint}: {e}") from None
    cfg = EchoNetConfig()
    for key in ("frames", "period"):
        if key in ckpt and isinstance(ckpt[key], int):
            setattr(cfg, key, ckpt[key])

    def triple(v, what):
        v = [float(x) for x in (v if isinstance(v, (list, tuple)) else [v])]
        if len(v) == 1:
            v = v * 3
        if len(v) != 3 or (what == "std" and min(v) <= 0):
            raise WeightsError(f"--{what} needs 1 or 3 numbers (std > 0), got {v}")
        return tuple(v)
    if mean is not None:
        cfg.mean = triple(mean, "mean")
    if std is not None:
        cfg.std = triple(std, "std")
    model = EchoNetR2Plus1D(cfg)
    load_state_strict(model, state, checkpoint.name)
    tensors = {k: (v.half() if fp16 and v.is_floating_point() else v) for k, v in model.state_dict().items()}
    prov = {"source": checkpoint.name, "sha256": file_sha256(checkpoint), "licence": ECHONET_NOTE,
            "epoch": ckpt.get("epoch") if isinstance(ckpt.get("epoch"), int) else None}
    save_tensors(out / filename, tensors, "regressor", cfg.to_dict(), provenance=str(prov))
    return update_manifest(out, regressor=filename, regressor_provenance=prov)
