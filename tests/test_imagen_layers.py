"""echogen/nets/kernels.py and the imagen3d network's fast layers (docs/PERF.md change 11) against the plain PyTorch ops they replace:
same outputs and same gradients, on shapes that take every branch."""
import pytest
import torch
import torch.nn.functional as F

from echogen.nets.imagen.layers import Attention, TemporalPEG, conv2d_as_3d
from echogen.nets import kernels
from echogen.nets.kernels import frame_conv, temporal_conv


def _grads(fn, *tensors):
    tensors = [t.detach().clone().requires_grad_(True) for t in tensors]
    out = fn(*tensors)
    (out * torch.linspace(-1, 1, out.numel()).reshape(out.shape)).sum().backward()
    return out.detach(), [t.grad for t in tensors]


@pytest.mark.parametrize("t,kt,causal", [(5, 3, True), (2, 3, True), (1, 3, True), (4, 1, True), (9, 3, True),
                                         (5, 3, False), (2, 5, False), (6, 5, False), (10, 5, False)])
@pytest.mark.parametrize("gemm_only", [False, True])
def test_temporal_conv_matches_conv1d(t, kt, causal, gemm_only, monkeypatch):
    if gemm_only:  # causal clips of >= 8 frames take the Conv2d path unless their padded copy is too big
        monkeypatch.setattr(kernels, "PADDED_COPY_MAX", 0)
        monkeypatch.setattr(kernels, "malloc_tuned", lambda: False)
    g = torch.Generator().manual_seed(0)
    x, w, b = torch.randn(2, 6, t, 3, 4, generator=g), torch.randn(5, 6, kt, generator=g), torch.randn(5, generator=g)

    pad = (kt - 1, 0) if causal else (kt // 2, kt // 2)

    def reference(x, w, b):  # Conv1d over (B*H*W, C, T), left-padded by kt - 1 (causal) or centred
        bb, c, tt, h, ww = x.shape
        y = F.conv1d(F.pad(x.permute(0, 3, 4, 1, 2).reshape(-1, c, tt), pad), w, b)
        return y.reshape(bb, h, ww, -1, tt).permute(0, 3, 4, 1, 2)

    out, grads = _grads(lambda x, w, b: temporal_conv(x, w, b, centre=pad[0]), x, w, b)
    ref, ref_grads = _grads(reference, x, w, b)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    for a, r in zip(grads, ref_grads):  # the bias gradient is a sum of ~200 terms of both signs
        torch.testing.assert_close(a, r, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("c_in,k", [(3, 3), (20, 3), (20, 1), (4, 7), (20, 5)])
def test_frame_conv_matches_conv3d(c_in, k):  # branches: few channels, 3x3 Conv3d, 1x1 GEMM, wide stems
    g = torch.Generator().manual_seed(1)
    conv = conv2d_as_3d(c_in, 6, k, padding=k // 2)
    x = torch.randn(2, c_in, 3, 9, 9, generator=g)
    out, (gx,) = _grads(conv, x)
    ref, (rx,) = _grads(lambda v: F.conv3d(v, conv.weight, conv.bias, padding=conv.padding), x)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(gx, rx, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(frame_conv(x, conv.weight[:, :, 0], None, k // 2),
                               F.conv3d(x, conv.weight, None, padding=conv.padding), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("t", [4, 2, 1])
def test_temporal_peg_matches_grouped_conv3d(t):
    peg = TemporalPEG(5)
    x = torch.randn(2, 5, t, 3, 3)
    conv = peg.fn[1]
    out, (gx,) = _grads(peg, x)
    ref, (rx,) = _grads(lambda v: v + conv(F.pad(v, (0, 0, 0, 0, 2, 0))), x)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(gx, rx, rtol=1e-5, atol=1e-5)


def _attention_reference(att: Attention, x):
    """Multi-query attention written out head by head (the published implementation's order of ops)."""
    b, n, _ = x.shape
    xn = F.layer_norm(x, x.shape[-1:], att.norm.g, None, 1e-5)
    q = att.to_q(xn).reshape(b, n, att.heads, -1).transpose(1, 2) * att.scale
    k, v = att.to_kv(xn).chunk(2, dim=-1)
    k = torch.cat([att.null_kv[0].expand(b, 1, -1), k], dim=1)
    v = torch.cat([att.null_kv[1].expand(b, 1, -1), v], dim=1)
    sim = torch.einsum("bhid,bjd->bhij", q, k)
    if att.rel_pos_bias is not None:
        bias = att.rel_pos_bias(n, x.device, x.dtype)
        sim = sim + torch.cat([att.null_attn_bias.reshape(-1, 1, 1).expand(-1, n, 1), bias], dim=-1)
    if att.causal:
        sim = sim.masked_fill(torch.ones(n, n + 1, dtype=torch.bool).triu(2), -torch.finfo(sim.dtype).max)
    out = torch.einsum("bhij,bjd->bhid", sim.softmax(-1), v).transpose(1, 2).reshape(b, n, -1)
    return att.to_out(out)


@pytest.mark.parametrize("causal,rel", [(True, True), (False, True), (False, False)])
def test_attention_matches_head_by_head_reference(causal, rel):
    torch.manual_seed(2)
    att = Attention(12, heads=3, dim_head=4, causal=causal, rel_pos_bias=rel)
    torch.nn.init.normal_(att.to_out[-1].g)
    x = torch.randn(5, 6, 12)
    out, (gx,) = _grads(att, x)
    ref, (rx,) = _grads(lambda v: _attention_reference(att, v), x)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(gx, rx, rtol=1e-4, atol=1e-5)
