"""Network "imagen3d": the space-time UNet of the published EchoDiffusion checkpoints.

Semantics (imagen-pytorch 1.22.2 Unet3D as used by the EchoDiffusion authors' fork, re-implemented):
  input channels [conditioning frame (repeated over frames), noisy video, low-res video], a multi-scale
  per-frame stem (3/7/15 kernels), factorised space-time convs with causal temporal convs, per level a
  causal temporal PEG and causal temporal attention with relative position bias, cross-attention to the
  conditioning tokens at the marked levels and in both bottleneck blocks, optional space-time attention
  at the bottleneck, pixel-shuffle upsampling, and the low-res video concatenated again before the last conv.
  Conditioning tokens = 2 noise-level tokens (+ 2 low-res-level tokens) + the EF "text" pooled to 36
  latents; the pooled EF is also added to the noise-level embedding. EF enters as text_embeds = EF/100,
  shape (B, 1, 1); an EF of exactly 0 is masked as "no text"; dropping EF (guidance) uses learned nulls.

EchoGen's forward signature (echogen/nets/unet.py): x already c_in-scaled, c_noise = ln(sigma)/4 (what the
checkpoints were trained with), frame in [0, 1], ef = EF/100, lowres in [-1, 1] noise-augmented at level
t, aug = t. The low-res level embedding receives t itself: that is what the published models were
sampled with (0.2); note their training fed log-SNR(t) instead, so fine-tuning them here is a change.
A 3-channel network (the published ones: EchoNet videos are grey RGB) also accepts 1-channel x / lowres /
frame: they are repeated to 3 channels and the output is averaged back to 1 channel.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from echogen.nets.imagen.layers import (Downsample, LearnedSinusoidal, Parallel, PixelShuffleUpsample,
                                   ResnetBlock, SpaceTimeAttention, TemporalAttention, TemporalPEG, conv2d_as_3d)
from echogen.nets.imagen.perceiver import PerceiverResampler
from echogen.nets.registry import register


@dataclass
class Imagen3DOptions:
    """StageConfig.network_options of an "imagen3d" stage (names as in the published config.yaml)."""
    dim: int = 64
    dim_mults: tuple = (1, 2, 4)
    num_resnet_blocks: int = 2
    layer_cross_attns: tuple = (False, False, True)
    attend_at_middle: bool = True
    memory_efficient: bool = False
    lowres_cond: bool = False
    channels: int = 3
    cond_images_channels: int = 3
    text_embed_dim: int = 1
    max_text_len: int = 1
    attn_heads: int = 8
    attn_dim_head: int = 64
    resnet_groups: int = 8
    num_time_tokens: int = 2
    learned_sinu_pos_emb_dim: int = 16
    attn_pool_num_latents: int = 32
    init_cross_embed_kernel_sizes: tuple = (3, 7, 15)
    time_rel_pos_bias_depth: int = 2
    final_conv_kernel_size: int = 3

    @staticmethod
    def from_dict(d: dict) -> "Imagen3DOptions":
        known = {f.name for f in dataclasses.fields(Imagen3DOptions)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown imagen3d network options: {sorted(unknown)}")
        o = Imagen3DOptions(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})
        n = len(o.dim_mults)
        lca = o.layer_cross_attns
        o.layer_cross_attns = tuple(bool(x) for x in lca) if isinstance(lca, (tuple, list)) else (bool(lca),) * n
        if len(o.layer_cross_attns) != n:
            raise ValueError(f"layer_cross_attns {o.layer_cross_attns} must have one entry per level ({n})")
        return o


class Imagen3DUNet(nn.Module):
    def __init__(self, o: Imagen3DOptions):
        super().__init__()
        self.o = o
        dim, heads, dh = o.dim, o.attn_heads, o.attn_dim_head
        cond_dim = dim
        time_dim = dim * 4 * (2 if o.lowres_cond else 1)
        in_ch = o.channels * (2 if o.lowres_cond else 1) + o.cond_images_channels
        # multi-scale per-frame stem: kernels sorted ascending, widths dim/2, dim/4, ..., rest
        ks = sorted(o.init_cross_embed_kernel_sizes)
        widths = [dim // 2 ** i for i in range(1, len(ks))]
        widths.append(dim - sum(widths))
        self.init_conv = nn.Module()
        self.init_conv.convs = nn.ModuleList([conv2d_as_3d(in_ch, w, k, padding=(k - 1) // 2) for k, w in zip(ks, widths)])

        def level_embed():
            return nn.Sequential(LearnedSinusoidal(o.learned_sinu_pos_emb_dim),
                                 nn.Linear(o.learned_sinu_pos_emb_dim + 1, time_dim), nn.SiLU())
        self.to_time_hiddens = level_embed()
        self.to_time_cond = nn.Sequential(nn.Linear(time_dim, time_dim))
        self.to_time_tokens = nn.Sequential(nn.Linear(time_dim, cond_dim * o.num_time_tokens))
        if o.lowres_cond:
            self.to_lowres_time_hiddens = level_embed()
            self.to_lowres_time_cond = nn.Sequential(nn.Linear(time_dim, time_dim))
            self.to_lowres_time_tokens = nn.Sequential(nn.Linear(time_dim, cond_dim * o.num_time_tokens))
        self.norm_cond = nn.LayerNorm(cond_dim)
        self.text_to_cond = nn.Linear(o.text_embed_dim, cond_dim)
        self.attn_pool = PerceiverResampler(cond_dim, depth=2, heads=heads, dim_head=dh, num_latents=o.attn_pool_num_latents)
        self.null_text_embed = nn.Parameter(torch.randn(1, o.max_text_len, cond_dim))
        self.null_text_hidden = nn.Parameter(torch.randn(1, time_dim))
        self.to_text_non_attn_cond = nn.Sequential(nn.LayerNorm(cond_dim), nn.Linear(cond_dim, time_dim), nn.SiLU(),
                                                   nn.Linear(time_dim, time_dim))

        g = o.resnet_groups
        rb = dict(time_dim=time_dim, groups=g)
        tattn = lambda d: TemporalAttention(d, heads, dh, o.time_rel_pos_bias_depth)  # noqa: E731
        self.init_resnet_block = ResnetBlock(dim, dim, gca=True, **rb) if o.memory_efficient else None
        self.init_temporal_peg = TemporalPEG(dim)
        self.init_temporal_attn = tattn(dim)

        dims = [dim] + [dim * m for m in o.dim_mults]
        in_out = list(zip(dims[:-1], dims[1:]))
        n = len(in_out)
        self.downs, self.ups, skip_dims = nn.ModuleList(), nn.ModuleList(), []
        # each level: [pre_down, block_in (+cross-attn), resnet blocks, (no layer attention), PEG,
        #              temporal attention, (no temporal downsample), post_down]
        for i, (d_in, d_out) in enumerate(in_out):
            cur = d_out if o.memory_efficient else d_in
            skip_dims.append(cur)
            cross = cond_dim if o.layer_cross_attns[i] else None
            post = None
            if not o.memory_efficient:
                post = Downsample(cur, d_out) if i < n - 1 else Parallel(conv2d_as_3d(d_in, d_out, 3, 1), conv2d_as_3d(d_in, d_out, 1))
            self.downs.append(nn.ModuleList([
                Downsample(d_in, d_out) if o.memory_efficient else None,
                ResnetBlock(cur, cur, cond_dim=cross, heads=heads, dim_head=dh, **rb),
                nn.ModuleList([ResnetBlock(cur, cur, gca=True, **rb) for _ in range(o.num_resnet_blocks)]),
                None, TemporalPEG(cur), tattn(cur), None, post]))
        mid = dims[-1]
        # the bottleneck's cross-attention always has 8 heads x 64 (it is built without the attention settings)
        self.mid_block1 = ResnetBlock(mid, mid, cond_dim=cond_dim, **rb)
        self.mid_attn = SpaceTimeAttention(mid, heads, dh) if o.attend_at_middle else None
        self.mid_temporal_peg = TemporalPEG(mid)
        self.mid_temporal_attn = tattn(mid)
        self.mid_block2 = ResnetBlock(mid, mid, cond_dim=cond_dim, **rb)
        for i, (d_in, d_out) in enumerate(reversed(in_out)):
            last = i == n - 1
            skip = skip_dims.pop()
            cross = cond_dim if o.layer_cross_attns[n - 1 - i] else None
            self.ups.append(nn.ModuleList([
                ResnetBlock(d_out + skip, d_out, cond_dim=cross, heads=heads, dim_head=dh, **rb),
                nn.ModuleList([ResnetBlock(d_out + skip, d_out, gca=True, **rb) for _ in range(o.num_resnet_blocks)]),
                None, TemporalPEG(d_out), tattn(d_out), None,
                PixelShuffleUpsample(d_out, d_in) if (not last or o.memory_efficient) else None]))
        self.final_res_block = ResnetBlock(dim, dim, gca=True, **rb)
        k = o.final_conv_kernel_size
        self.final_conv = conv2d_as_3d(dim + (o.channels if o.lowres_cond else 0), o.channels, k, padding=k // 2)

    # ---- conditioning ------------------------------------------------------------------------
    def _conditioning(self, c_noise, ef, aug, ef_keep, dtype):
        o, b = self.o, c_noise.shape[0]
        hid = self.to_time_hiddens(c_noise.to(dtype))
        t = self.to_time_cond(hid)
        tokens = self.to_time_tokens(hid).reshape(b, o.num_time_tokens, -1)
        if o.lowres_cond:
            lhid = self.to_lowres_time_hiddens(aug.reshape(b).to(dtype))
            t = t + self.to_lowres_time_cond(lhid)
            tokens = torch.cat([tokens, self.to_lowres_time_tokens(lhid).reshape(b, o.num_time_tokens, -1)], dim=1)
        # EF as a one-token "text" (B, 1, 1); EF == 0 is masked like an empty text
        text = ef.reshape(b, 1, 1).to(dtype).expand(-1, -1, o.text_embed_dim)
        text_mask = (text != 0).any(dim=-1)                                      # (B, 1)
        keep = torch.ones(b, dtype=torch.bool, device=ef.device) if ef_keep is None else ef_keep.reshape(b).bool()
        txt = self.text_to_cond(text)[:, :o.max_text_len]
        pad = o.max_text_len - txt.shape[1]
        if pad > 0:
            txt = F.pad(txt, (0, 0, 0, pad))
            text_mask = F.pad(text_mask, (0, pad), value=False)
        txt = torch.where((text_mask & keep[:, None])[..., None], txt, self.null_text_embed.to(dtype))
        txt = self.attn_pool(txt)
        hidden = self.to_text_non_attn_cond(txt.mean(dim=-2))
        t = t + torch.where(keep[:, None], hidden, self.null_text_hidden.to(dtype))
        return t, self.norm_cond(torch.cat([tokens, txt], dim=1))

    @staticmethod
    def _channels(v: torch.Tensor, c: int) -> torch.Tensor:
        if v.shape[1] == c:
            return v
        if v.shape[1] == 1:
            return v.expand(-1, c, *v.shape[2:])
        raise ValueError(f"expected {c} or 1 channel(s), got {v.shape[1]}")

    def forward(self, x, c_noise, frame, ef, lowres=None, aug=None, ef_keep=None, frame_keep=None,
                ignore_time: bool = False):
        o = self.o
        b, c_in, t, h, w = x.shape
        if o.lowres_cond and (lowres is None or aug is None):
            raise ValueError("this stage is a super-resolution stage: lowres and aug are required")
        dtype = x.dtype
        x = self._channels(x, o.channels)
        cond_t, ctx = self._conditioning(c_noise.reshape(b), ef, aug, ef_keep, dtype)
        frame = self._channels(frame.to(dtype), o.cond_images_channels)
        if frame_keep is not None:  # the published models never drop I_c; a dropped frame is black
            frame = frame * frame_keep.reshape(b, 1, 1, 1).to(dtype)
        frame = frame[:, :, None].expand(-1, -1, t, -1, -1)
        if frame.shape[-1] != w:  # the network's own resize of I_c: nearest
            frame = F.interpolate(frame, size=(t, h, w), mode="nearest")
        inputs = [frame, x]
        if o.lowres_cond:
            lowres = self._channels(lowres.to(dtype), o.channels)
            inputs.append(lowres)
        xin = torch.cat(inputs, dim=1)                                        # [I_c, x, low-res]
        y = torch.cat([conv(xin) for conv in self.init_conv.convs], dim=1)
        if not ignore_time:
            y = self.init_temporal_attn(self.init_temporal_peg(y))
        if self.init_resnet_block is not None:
            y = self.init_resnet_block(y, cond_t, ignore_time=ignore_time)
        hiddens = []
        for pre, block_in, blocks, _, peg, tattn, _, post in self.downs:
            if pre is not None:
                y = pre(y)
            y = block_in(y, cond_t, ctx, ignore_time)
            for blk in blocks:
                y = blk(y, cond_t, ignore_time=ignore_time)
                hiddens.append(y)
            if not ignore_time:
                y = tattn(peg(y))
            hiddens.append(y)
            if post is not None:
                y = post(y)
        y = self.mid_block1(y, cond_t, ctx, ignore_time)
        if self.mid_attn is not None:
            y = self.mid_attn(y)
        if not ignore_time:
            y = self.mid_temporal_attn(self.mid_temporal_peg(y))
        y = self.mid_block2(y, cond_t, ctx, ignore_time)
        skip_scale = 2 ** -0.5
        for block_in, blocks, _, peg, tattn, _, up in self.ups:
            y = block_in(torch.cat([y, hiddens.pop() * skip_scale], dim=1), cond_t, ctx, ignore_time)
            for blk in blocks:
                y = blk(torch.cat([y, hiddens.pop() * skip_scale], dim=1), cond_t, ignore_time=ignore_time)
            if not ignore_time:
                y = tattn(peg(y))
            if up is not None:
                y = up(y)
        y = self.final_res_block(y, cond_t, ignore_time=ignore_time)
        if o.lowres_cond:
            y = torch.cat([y, lowres], dim=1)
        out = self.final_conv(y)
        return out.mean(dim=1, keepdim=True) if c_in == 1 and o.channels != 1 else out


@register("imagen3d")
def build(stage) -> nn.Module:
    opts = Imagen3DOptions.from_dict(dict(stage.network_options))
    if opts.lowres_cond == stage.is_base:
        raise ValueError(f"stage '{stage.name}': network_options.lowres_cond={opts.lowres_cond} but the stage "
                         f"{'is' if stage.is_base else 'is not'} the base (unet.lowres_channels={stage.unet.lowres_channels})")
    return Imagen3DUNet(opts)

