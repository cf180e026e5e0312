"""The space-time factorised 3D UNet F(x, c_noise, conditioning) of every cascade stage.

Inputs (EDM's plain network; preconditioning lives in echogen/diffusion/edm.py):
  x       (B, C, T, H, W)  noisy video already scaled by c_in
  c_noise (B,)             noise-level input (log(sigma) / 4)
  frame   (B, Cc, H, W)    conditioning frame I_c in [0, 1] at this stage's size
  ef      (B,)             lambda_c = EF / 100
  lowres  (B, Cl, T, H, W) previous stage's output, upsampled to this stage (SR stages only), [-1, 1]
  aug     (B,)             that input's noise-augmentation level t in [0, 1] (SR stages only)
  ef_keep (B,) bool        False -> learned null EF (classifier-free guidance); default all True
  frame_keep (B,) bool     False -> learned null frame (the paper never drops I_c)
Input channels are concatenated in the order [I_c, x, lowres].
"""
from __future__ import annotations

import torch
from torch import nn

from echogen.config import UNetConfig
from echogen.nets.layers import (CrossAttention, Downsample, MLPEmbedding, ResBlock, SpaceTimeConv, SpatialAttention,
                            TemporalAttention, Upsample, zero_)


class Level(nn.Module):
    """One ResBlock plus the attention layers this level asks for."""

    def __init__(self, cin, cout, cfg: UNetConfig, level: int, emb_dim: int, deepest: bool = False):
        super().__init__()
        self.res = ResBlock(cin, cout, emb_dim, cfg.groups, cfg.temporal_kernel, cfg.dropout)
        attn = []
        if level in cfg.spatial_attn_levels or (deepest and cfg.mid_attn):
            attn.append(SpatialAttention(cout, cfg.heads, cfg.head_dim, cfg.groups))
        if level in cfg.temporal_attn_levels or (deepest and cfg.mid_attn):
            attn.append(TemporalAttention(cout, cfg.heads, cfg.head_dim, cfg.groups))
        if level in cfg.cross_attn_levels:
            attn.append(CrossAttention(cout, cfg.ef_dim, cfg.heads, cfg.head_dim, cfg.groups))
        self.attn = nn.ModuleList(attn)

    def forward(self, x, emb, ctx, ignore_time):
        x = self.res(x, emb, ignore_time)
        for a in self.attn:
            x = a(x, ctx=ctx, ignore_time=ignore_time)
        return x


class SpaceTimeUNet(nn.Module):
    def __init__(self, cfg: UNetConfig):
        super().__init__()
        self.cfg = cfg
        w, mults, L = cfg.base_width, cfg.channel_mult, len(cfg.channel_mult)
        emb_dim = 4 * w
        chans = [w * m for m in mults]
        # Conditioning embeddings: noise level, EF (token + pooled), low-res augmentation level.
        self.noise_emb = MLPEmbedding(w, emb_dim)
        self.ef_token = nn.Linear(1, cfg.ef_dim)                 # the paper's Linear 1 -> 64
        self.ef_null = nn.Parameter(torch.randn(cfg.ef_dim) * 0.02)
        self.ef_pool = nn.Sequential(nn.Linear(cfg.ef_dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.frame_null = nn.Parameter(torch.zeros(cfg.cond_channels))
        self.aug_emb = MLPEmbedding(w, emb_dim) if cfg.lowres_channels else None

        cin = cfg.cond_channels + cfg.channels + cfg.lowres_channels
        self.stem = SpaceTimeConv(cin, w, k=3, kt=cfg.temporal_kernel)
        # Encoder: num_res_blocks per level, each output kept as a skip; downsample between levels.
        self.down, self.downsample = nn.ModuleList(), nn.ModuleList()
        skip_ch, ch = [], w
        for i, c in enumerate(chans):
            blocks = nn.ModuleList()
            for _ in range(cfg.num_res_blocks):
                blocks.append(Level(ch, c, cfg, i, emb_dim))
                ch = c
                skip_ch.append(ch)
            self.down.append(blocks)
            self.downsample.append(Downsample(ch) if i < L - 1 else nn.Identity())
        self.mid = nn.ModuleList([Level(ch, ch, cfg, L - 1, emb_dim, deepest=True),
                                  Level(ch, ch, cfg, L, emb_dim)])
        # Decoder mirrors the encoder, concatenating skips.
        self.up, self.upsample = nn.ModuleList(), nn.ModuleList()
        for i in reversed(range(L)):
            blocks = nn.ModuleList()
            for _ in range(cfg.num_res_blocks):
                blocks.append(Level(ch + skip_ch.pop(), chans[i], cfg, i, emb_dim))
                ch = chans[i]
            self.up.append(blocks)
            self.upsample.append(Upsample(ch) if i > 0 else nn.Identity())
        self.out_norm = nn.GroupNorm(min(cfg.groups, ch), ch)
        self.out = zero_(nn.Conv3d(ch, cfg.channels, (1, 3, 3), padding=(0, 1, 1)))

    def forward(self, x, c_noise, frame, ef, lowres=None, aug=None, ef_keep=None, frame_keep=None,
                ignore_time: bool = False):
        cfg = self.cfg
        b, _, t, h, w = x.shape
        # EF token (B, 1, ef_dim), replaced by the learned null where dropped.
        tok = self.ef_token(ef.reshape(b, 1).to(x.dtype))
        if ef_keep is not None:
            tok = torch.where(ef_keep.reshape(b, 1), tok, self.ef_null.to(tok.dtype))
        emb = self.noise_emb(c_noise.reshape(b)) + self.ef_pool(tok)
        if self.aug_emb is not None:
            if lowres is None or aug is None:
                raise ValueError("this stage is a super-resolution stage: lowres and aug are required")
            emb = emb + self.aug_emb(aug.reshape(b))
        if frame_keep is not None:
            frame = torch.where(frame_keep.reshape(b, 1, 1, 1), frame, self.frame_null.reshape(1, -1, 1, 1))
        frame = frame.to(x.dtype)[:, :, None].expand(-1, -1, t, -1, -1)          # (B, Cc, T, H, W)
        inputs = [frame, x] + ([lowres.to(x.dtype)] if cfg.lowres_channels else [])
        ctx = tok[:, None, :]                                                     # (B, 1, ef_dim)

        hx = self.stem(torch.cat(inputs, dim=1), ignore_time)
        skips = []
        for blocks, down in zip(self.down, self.downsample):
            for blk in blocks:
                hx = blk(hx, emb, ctx, ignore_time)
                skips.append(hx)
            hx = down(hx)
        for blk in self.mid:
            hx = blk(hx, emb, ctx, ignore_time)
        for blocks, up in zip(self.up, self.upsample):
            for blk in blocks:
                hx = blk(torch.cat([hx, skips.pop()], dim=1), emb, ctx, ignore_time)
            if not isinstance(up, nn.Identity):
                hx = up(hx, skips[-1].shape[-2:])
        return self.out(torch.nn.functional.silu(self.out_norm(hx)))
