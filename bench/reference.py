"""EchoGen's UNet beside lucidrains' imagen-pytorch `Unet3D` (v1.22.2, the code the paper was built on),
timed in ONE process on the same inputs. A benchmark, not a dependency: run it from the side venv that
bench/setup_reference_env.sh makes, with EchoGen on the path:

    PYTHONPATH=/work/main .ref-venv/bin/python bench/reference.py --preset demo
    PYTHONPATH=/work/main .ref-venv/bin/python bench/reference.py --preset 2SCM --frames 4 --repeats 3

imagen-pytorch is only imported here (GPL-free EchoGen: none of its code is copied into the repo).

What is compared, per stage, at the stage's size and frame count (or --frames):
  ours      one call of EchoGen's network at batch 2B when the stage uses guidance (cond and uncond in
            one batch, as echogen.diffusion.guidance.GuidedDenoiser runs it), else batch B
  theirs    imagen's `forward_with_cond_scale`: two separate calls at batch B when guided (the paper's
            sampler), else one call
  theirs_b  imagen's network once at batch 2B (same batch as ours: the pure network ratio)
  theirs_2d imagen as `theirs`, but its cross-embed stem's (1, k, k) Conv3d layers run as the same Conv2d
            over frames. On this CPU build (torch 2.13 and 2.14.1, oneDNN), a batch-1 Conv3d with few input
            channels and a 15 x 15 kernel takes ~12 s where the same conv as Conv2d takes ~0.2 s: a slow
            kernel path, not imagen's design. `ratio_2d` = ours / theirs_2d is the conservative ratio.
ratio = ours / theirs per network evaluation (< 1: EchoGen faster). Per video: ours x NFE of the stage's
default sampler vs theirs_2d x (2N - 1) (the paper's Heun sampler at the stage's step count).

Paper presets (stage.network == "imagen3d"): EchoGen's imagen-compatible network (it loads the published
weights) against imagen's Unet3D built from the SAME keyword arguments (stage.network_options): identical
architecture and parameter count, so the ratio is the implementation alone.

Configuration of the demo/tiny ("spacetime" network) stages ("--match layers", default): imagen's Unet3D with the stage's widths (dim, dim_mults),
heads x head_dim, groups, input channels (video, I_c as cond_images, low-res video), EF as a 1-d
"text" embedding (text_embed_dim 1, max_text_len 1, as EchoDiffusion's configs), cross-attention at
the same levels, bottleneck attention on/off as ours, and the same number of resnet blocks per level
(imagen adds an "init" block per level, so num_resnet_blocks = ours - 1). imagen builds a temporal
attention at EVERY level (and one at full resolution after its first conv); those at levels where
EchoGen has none are swapped for nn.Identity after construction. What stays imagen's own design:
its bottleneck attention is joint over (frames x H x W) where ours is spatial-then-temporal, its
layer attention is joint space-time, plus global-context gating, cross-embed first conv (3/7/15),
final resnet block, Perceiver pooling of the text tokens, temporal "peg" convs.
"--match paper": imagen exactly as EchoDiffusion's YAML configs build it (num_resnet_blocks = ours,
every temporal attention kept, memory_efficient on super-resolution stages).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent


def import_unet3d():
    """imagen_pytorch 1.22.2 reads a T5 config from the hub at import time; offline, give it a local one."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import transformers
    transformers.T5Config.from_pretrained = staticmethod(lambda *a, **k: transformers.T5Config(d_model=768))
    from imagen_pytorch.imagen_video import Unet3D
    return Unet3D


def unet3d_kwargs(stage, match: str = "layers") -> dict:
    """imagen Unet3D keyword arguments for an EchoGen stage. A stage whose network is "imagen3d" (the
    paper presets: EchoGen's own imagen-compatible network) carries imagen's keyword arguments in
    network_options: those are used as they are (identical architecture; only the code differs)."""
    if getattr(stage, "network", "spacetime") == "imagen3d":
        return {k: tuple(v) if isinstance(v, list) else v for k, v in stage.network_options.items()}
    u = stage.unet
    L = len(u.channel_mult)
    kw = dict(dim=u.base_width, dim_mults=tuple(u.channel_mult), channels=u.channels,
              cond_images_channels=u.cond_channels, lowres_cond=u.lowres_channels > 0,
              attn_heads=u.heads, attn_dim_head=u.head_dim, resnet_groups=u.groups,
              text_embed_dim=1, max_text_len=1, cond_on_text=True,
              layer_attns=tuple(i in u.spatial_attn_levels for i in range(L)),
              layer_cross_attns=tuple(i in u.cross_attn_levels for i in range(L)),
              attend_at_middle=u.mid_attn, resize_mode="trilinear")
    if match == "paper":
        kw.update(num_resnet_blocks=u.num_res_blocks, layer_attns=False, memory_efficient=u.lowres_channels > 0)
    else:
        kw.update(num_resnet_blocks=max(0, u.num_res_blocks - 1))
    return kw


def strip_temporal_attention(net, stage) -> int:
    """Replace imagen's temporal attention at levels where EchoGen has none by nn.Identity."""
    u = stage.unet
    L = len(u.channel_mult)
    ours = set(u.temporal_attn_levels)
    n = 0
    if 0 not in ours:
        net.init_temporal_attn, n = nn.Identity(), n + 1
    for i, layer in enumerate(net.downs):      # [pre_down, init_block, resnets, attn, peg, temporal_attn, ...]
        if i not in ours:
            layer[5], n = nn.Identity(), n + 1
    for j, layer in enumerate(net.ups):        # [init_block, resnets, attn, peg, temporal_attn, ...]
        if (L - 1 - j) not in ours:
            layer[4], n = nn.Identity(), n + 1
    if not (u.mid_attn or (L - 1) in ours):
        net.mid_temporal_attn, n = nn.Identity(), n + 1
    return n


class FramewiseConv(nn.Module):
    """A (1, k, k) Conv3d run as the same Conv2d over the B*T frames (same weights, same output)."""

    def __init__(self, conv3d: nn.Conv3d):
        super().__init__()
        self.conv = conv3d

    def forward(self, x):
        c = self.conv
        b, ch, t, h, w = x.shape
        y = nn.functional.conv2d(x.transpose(1, 2).reshape(b * t, ch, h, w), c.weight[:, :, 0], c.bias,
                                 stride=c.stride[1:], padding=c.padding[1:])
        return y.reshape(b, t, *y.shape[1:]).transpose(1, 2)


def stem_as_conv2d(theirs):
    """A copy of imagen's Unet3D whose cross-embed stem runs as Conv2d over frames (see theirs_2d)."""
    import copy
    net = copy.deepcopy(theirs)
    convs = getattr(net.init_conv, "convs", None)
    if convs is None:
        net.init_conv = FramewiseConv(net.init_conv)
    else:
        for i, c in enumerate(convs):
            convs[i] = FramewiseConv(c)
    return net


def build_pair(stage, diffusion, match="layers", seed=0):
    from echogen.diffusion.cascade import build_denoiser
    Unet3D = import_unet3d()
    torch.manual_seed(seed)
    ours = build_denoiser(stage, diffusion).net.eval()
    torch.manual_seed(seed)
    theirs = Unet3D(**unet3d_kwargs(stage, match)).eval()
    same_arch = getattr(stage, "network", "spacetime") == "imagen3d"
    stripped = strip_temporal_attention(theirs, stage) if match == "layers" and not same_arch else 0
    return ours, theirs, stripped


def make_inputs(stage, batch, frames, seed=0):
    g = torch.Generator().manual_seed(seed)
    u, t, s = stage.unet, frames, stage.size
    x = torch.randn((batch, u.channels, t, s, s), generator=g)
    frame = torch.rand((batch, u.cond_channels, s, s), generator=g)
    ef = torch.rand(batch, generator=g) * 0.7 + 0.15
    c_noise = torch.randn(batch, generator=g) * 0.3
    low = torch.rand((batch, u.lowres_channels, t, s, s), generator=g) * 2 - 1 if u.lowres_channels else None
    aug = torch.full((batch,), stage.lowres_aug_sample) if u.lowres_channels else None
    return x, c_noise, frame, ef, low, aug


def calls(stage, ours, theirs, batch, frames, theirs_2d=None):
    """Zero-argument callables: ours (one batched CFG call), theirs (paper-style CFG), theirs_b, and
    theirs_2d (theirs_2d's network, paper-style CFG) when given."""
    guided = stage.guidance != 1.0
    x, c_noise, frame, ef, low, aug = make_inputs(stage, batch, frames)
    cat2 = (lambda v: None if v is None else torch.cat([v, v])) if guided else (lambda v: v)
    keep = torch.cat([torch.ones(batch, dtype=torch.bool), torch.zeros(batch, dtype=torch.bool)]) if guided else None
    x2, cn2, fr2, ef2, low2, aug2 = (cat2(v) for v in (x, c_noise, frame, ef, low, aug))

    def ours_call():
        return ours(x2, cn2, fr2, ef2, lowres=low2, aug=aug2, ef_keep=keep)

    def their_kw(b_x, b_t, b_fr, b_ef, b_low, b_aug):
        kw = dict(text_embeds=b_ef.reshape(-1, 1, 1), cond_images=b_fr)
        if b_low is not None:
            kw.update(lowres_cond_img=b_low, lowres_noise_times=b_aug)
        return b_x, b_t, kw

    cc = getattr(theirs, "cond_images_channels", frame.shape[1])

    def their_kw(b_x, b_t, b_fr, b_ef, b_low, b_aug, _kw=their_kw):
        return _kw(b_x, b_t, b_fr.expand(-1, cc, -1, -1) if b_fr.shape[1] != cc else b_fr, b_ef, b_low, b_aug)

    tx, tt, tkw = their_kw(x, c_noise, frame, ef, low, aug)

    def theirs_call():  # the paper's guidance: cond and uncond as two separate forwards
        return theirs.forward_with_cond_scale(tx, tt, cond_scale=stage.guidance, **tkw)

    bx, bt, bkw = their_kw(x2, cn2, fr2, ef2, low2, aug2)

    def theirs_batched():
        return theirs(bx, bt, **bkw)

    def theirs_2d_call():
        return theirs_2d.forward_with_cond_scale(tx, tt, cond_scale=stage.guidance, **tkw)

    return ours_call, theirs_call, theirs_batched, (theirs_2d_call if theirs_2d is not None else None)


def interleaved_times(fns: dict, repeats: int, warmup: int) -> dict:
    """Median seconds of each callable, timed round-robin so machine load hits all alike."""
    with torch.no_grad():
        for _ in range(warmup):
            for f in fns.values():
                f()
        times = {k: [] for k in fns}
        for _ in range(repeats):
            for k, f in fns.items():
                t0 = time.perf_counter()
                f()
                times[k].append(time.perf_counter() - t0)
    return {k: (statistics.median(v), v) for k, v in times.items()}


def nparams(m):
    return sum(p.numel() for p in m.parameters())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="demo")
    ap.add_argument("--stages", default=None, help="comma-separated stage names (default all)")
    ap.add_argument("--frames", type=int, default=None, help="override frame count (paper stages are slow on CPU)")
    ap.add_argument("--batch", type=int, default=1, help="videos per sample (default 1)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--match", choices=["layers", "paper"], default="layers")
    ap.add_argument("--no-batched", action="store_true", help="skip theirs at batch 2B")
    ap.add_argument("--no-raw", action="store_true", help="skip theirs as shipped (time theirs_2d only; its "
                    "batch-1 stem conv takes ~12 s per call at 112x112 on this CPU)")
    ap.add_argument("--default-malloc", action="store_true",
                    help="leave glibc's malloc settings as they are (EchoGen's CLI and app tune them)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    from echogen.config import get_preset
    from echogen.diffusion.samplers import nfe
    if args.threads:
        torch.set_num_threads(args.threads)
    from echogen.device import tune_cpu_malloc
    malloc = False if args.default_malloc else tune_cpu_malloc()   # process-wide: both networks alike
    cfg = get_preset(args.preset)
    names = args.stages.split(",") if args.stages else cfg.stage_names
    import importlib.metadata as md
    info = {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "torch": torch.__version__,
            "imagen_pytorch": md.version("imagen-pytorch"), "threads": torch.get_num_threads(),
            "loadavg": [round(v, 2) for v in os.getloadavg()], "command": " ".join(sys.argv),
            "match": args.match, "malloc_tuned": malloc}
    print(f"# {args.preset} | torch {info['torch']} | imagen-pytorch {info['imagen_pytorch']} | "
          f"{info['threads']} threads | load {info['loadavg']} | {info['date']} | match={args.match} | "
          f"malloc tuned: {malloc}", flush=True)
    rows = []
    for st in cfg.stages:
        if st.name not in names:
            continue
        frames = args.frames or st.frames
        ours, theirs, stripped = build_pair(st, cfg.diffusion, args.match)
        theirs_2d = stem_as_conv2d(theirs)
        with torch.no_grad():  # same network, same output (the stem change is exact up to float rounding);
            o, t, tb, t2 = calls(st, ours, theirs, args.batch, frames, theirs_2d)   # also a first warm-up
            o()
            stem_diff = None if args.no_raw else (t() - t2()).abs().max().item()
            if args.no_raw:
                t2()
        fns = {"ours": o, "theirs_2d": t2} if args.no_raw else {"ours": o, "theirs": t, "theirs_2d": t2}
        if not args.no_batched:
            fns["theirs_b"] = tb
        print(f"  {st.name}: {frames}x{st.size}x{st.size}, params ours {nparams(ours)/1e6:.2f} M, "
              f"theirs {nparams(theirs)/1e6:.2f} M ({stripped} temporal attentions stripped) ...", flush=True)
        res = interleaved_times(fns, args.repeats, args.warmup)
        n_ours, n_theirs = nfe(st.sampler, st.steps), 2 * st.steps - 1
        row = {"stage": st.name, "frames": frames, "size": st.size, "guidance": st.guidance,
               "params_ours": nparams(ours), "params_theirs": nparams(theirs), "stripped_temporal_attn": stripped,
               **{f"{k}_s": round(v[0], 5) for k, v in res.items()},
               **{f"{k}_all_s": [round(x, 5) for x in v[1]] for k, v in res.items()},
               "ratio": res["ours"][0] / res["theirs"][0] if "theirs" in res else None,
               "ratio_2d": res["ours"][0] / res["theirs_2d"][0], "stem2d_max_abs_diff": stem_diff,
               "ratio_same_batch": res["ours"][0] / res["theirs_b"][0] if "theirs_b" in res else None,
               "nfe_ours": n_ours, "nfe_theirs": n_theirs,
               "video_ours_s": res["ours"][0] * n_ours, "video_theirs_s": res["theirs_2d"][0] * n_theirs,
               "loadavg": [round(v, 2) for v in os.getloadavg()]}
        rows.append(row)
        del ours, theirs, theirs_2d
    info["loadavg_after"] = [round(v, 2) for v in os.getloadavg()]
    print("\n| stage | T x H x W | params ours / theirs | ours s (1 call, batch 2B if CFG) | theirs s (paper CFG: "
          "2 calls) | ratio ours/theirs | theirs_2d s (stem as Conv2d) | ratio_2d | theirs s (1 call, batch 2B) "
          "| ratio same batch | s/video ours (NFE) | s/video theirs_2d (2N-1) |")
    print("|" + "---|" * 12)
    for r in rows:
        tb = f"{r['theirs_b_s']:.4f}" if "theirs_b_s" in r else "-"
        rb = f"{r['ratio_same_batch']:.2f}" if r["ratio_same_batch"] is not None else "-"
        raw = (f"{r['theirs_s']:.4f} | {r['ratio']:.2f}") if r["ratio"] is not None else "- | -"
        print(f"| {r['stage']} | {r['frames']}x{r['size']}x{r['size']} | {r['params_ours']/1e6:.2f} M / "
              f"{r['params_theirs']/1e6:.2f} M | {r['ours_s']:.4f} | {raw} "
              f"| {r['theirs_2d_s']:.4f} | **{r['ratio_2d']:.2f}** | {tb} | {rb} | {r['video_ours_s']:.1f} ({r['nfe_ours']}) | {r['video_theirs_s']:.1f} ({r['nfe_theirs']}) |")
    print(f"\nload after: {info['loadavg_after']}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"preset": args.preset, "machine": info, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
