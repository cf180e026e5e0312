"""Attention pooling of the text (EF) tokens into a fixed set of latents (Perceiver-style), as the
published EchoDiffusion networks do before using them as cross-attention context."""
from __future__ import annotations

import torch
from torch import nn

from echogen.nets.imagen.layers import LayerNormG


class PerceiverAttention(nn.Module):
    def __init__(self, dim: int, heads: int, dim_head: int):
        super().__init__()
        inner = heads * dim_head
        self.heads, self.scale = heads, dim_head ** -0.5
        self.norm = nn.LayerNorm(dim)
        self.norm_latents = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(dim, inner * 2, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner, dim, bias=False), nn.LayerNorm(dim))

    def forward(self, x, latents):
        x, latents = self.norm(x), self.norm_latents(latents)
        b, h = x.shape[0], self.heads
        q = self.to_q(latents)
        k, v = self.to_kv(torch.cat([x, latents], dim=-2)).chunk(2, dim=-1)   # latents attend to x and themselves
        q, k, v = (z.reshape(b, z.shape[1], h, -1).transpose(1, 2) for z in (q, k, v))
        attn = ((q * self.scale) @ k.transpose(-1, -2)).softmax(dim=-1)
        out = (attn @ v).transpose(1, 2).reshape(b, latents.shape[1], -1)
        return self.to_out(out)


def feed_forward(dim: int, mult: int = 4) -> nn.Sequential:
    hidden = int(dim * mult)
    return nn.Sequential(LayerNormG(dim), nn.Linear(dim, hidden, bias=False), nn.GELU(),
                         LayerNormG(hidden), nn.Linear(hidden, dim, bias=False))


class PerceiverResampler(nn.Module):
    """(B, n, dim) tokens -> (B, n_mean + n_latents, dim): learned latents (plus a few made from the
    mean token) refined by `depth` rounds of attention + feed-forward."""

    def __init__(self, dim: int, depth: int = 2, heads: int = 8, dim_head: int = 64, num_latents: int = 32,
                 num_latents_mean_pooled: int = 4, max_seq_len: int = 512, ff_mult: int = 4):
        super().__init__()
        self.pos_emb = nn.Embedding(max_seq_len, dim)
        self.latents = nn.Parameter(torch.randn(num_latents, dim))
        self.n_mean = num_latents_mean_pooled
        self.to_latents_from_mean_pooled_seq = nn.Sequential(
            LayerNormG(dim), nn.Linear(dim, dim * num_latents_mean_pooled))
        self.layers = nn.ModuleList([nn.ModuleList([PerceiverAttention(dim, heads, dim_head), feed_forward(dim, ff_mult)])
                                     for _ in range(depth)])

    def forward(self, x):
        b, n, d = x.shape
        x_pos = x + self.pos_emb(torch.arange(n, device=x.device))
        latents = self.latents[None].expand(b, -1, -1)
        mean = self.to_latents_from_mean_pooled_seq(x.mean(dim=1)).reshape(b, self.n_mean, d)
        latents = torch.cat([mean, latents], dim=1)
        for attn, ff in self.layers:
            latents = attn(x_pos, latents) + latents
            latents = ff(latents) + latents
        return latents
