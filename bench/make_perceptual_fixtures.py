"""Parity fixtures of tests/test_perceptual.py, made with the reference implementations, and the
full-size parity measurement of docs/METRICS.md.

Runs in the side environment (.ref-venv: torch 2.14.1, torchvision 0.29.1) with the reference packages
    nice -n 19 .ref-venv/bin/pip install lpips pytorch-fid
and piergiaj/pytorch-i3d's pytorch_i3d.py (github.com/piergiaj/pytorch-i3d, commit 05783d1) saved
anywhere outside this repository:
    PYTHONPATH=. nice -n 19 env OMP_NUM_THREADS=1 .ref-venv/bin/python bench/make_perceptual_fixtures.py \
        --i3d-src /tmp/i3dref/pytorch_i3d.py
EchoGen never imports lpips, pytorch-fid, torchvision or pytorch_i3d; this script only writes tensors.

The ImageNet / Kinetics weights cannot be downloaded, so every backbone gets deterministic weights from
tests/fixtures/published/detfill.py (a function of key name and shape only; the download calls are
patched to hand these to the reference code). The LPIPS lin layers are the lpips package's real
weights (weights/v0.1/alex.pth, vgg.pth, BSD-2-Clause), stored in the fixture.

Writes tests/fixtures/perceptual/:
  perceptual.safetensors  inputs and the reference outputs (LPIPS alex + vgg, FID Inception pool3,
                          I3D time-averaged logits and pooled features), the lin weights
  perceptual.json         key layouts {name: shape} of the reference state dicts (what a user's file
                          holds), keys the converter must ignore, and detfill checksums
Then it writes the full-size .pth files a user would have (trunks with their classifiers) to a
temporary folder, converts them with echogen.eval.perceptual.convert, and prints the max abs / rel
difference between EchoGen's networks and the references on the fixture inputs and on echo-sized
inputs (112x112 frames).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "fixtures" / "perceptual"


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


detfill = _load("detfill", ROOT / "tests" / "fixtures" / "published" / "detfill.py")


def checksum(sd: dict) -> list:
    vals = [v.double() for v in sd.values() if v.is_floating_point()]
    return [float(sum(v.sum() for v in vals)), float(sum(v.abs().sum() for v in vals))]


def shapes(sd: dict) -> dict:
    return {k: list(v.shape) for k, v in sd.items()}


# ---------------------------------------------------------------------------------------------
# Reference networks with deterministic weights
# ---------------------------------------------------------------------------------------------

def ref_lpips(backbone: str):
    """lpips.LPIPS(net=backbone) whose torchvision trunk carries detfill weights (its download patched)."""
    import lpips
    import lpips.pretrained_networks as pn
    import torchvision
    name = {"alex": "alexnet", "vgg": "vgg16"}[backbone]
    tv = getattr(torchvision.models, name)(weights=None)
    full = tv.state_dict()
    feats = detfill.fill_state({k: list(v.shape) for k, v in full.items() if k.startswith("features.")})
    tv.load_state_dict({**full, **feats})
    orig = getattr(pn.tv, name)
    setattr(pn.tv, name, lambda *a, **k: tv)
    try:
        model = lpips.LPIPS(net=backbone, pretrained=True, verbose=False).eval()
    finally:
        setattr(pn.tv, name, orig)
    lin_file = Path(lpips.__file__).parent / "weights" / "v0.1" / f"{backbone}.pth"
    lin = torch.load(lin_file, map_location="cpu", weights_only=True)
    return model, tv.state_dict(), feats, lin, lin_file


def ref_inception():
    """pytorch-fid's InceptionV3([pool3]) whose FID weights are detfill weights (its download patched)."""
    import pytorch_fid.inception as pi
    import torchvision
    cls = torchvision.models.Inception3
    real_load, real_url = cls.load_state_dict, pi.load_state_dict_from_url
    cls.load_state_dict = lambda self, *a, **k: None
    pi.load_state_dict_from_url = lambda *a, **k: None
    try:
        keys = shapes(pi.fid_inception_v3().state_dict())          # the layout of pt_inception-2015-12-05
    finally:
        cls.load_state_dict = real_load
    sd = detfill.fill_state(keys)
    pi.load_state_dict_from_url = lambda *a, **k: sd
    try:
        model = pi.InceptionV3([pi.InceptionV3.BLOCK_INDEX_BY_DIM[2048]]).eval()
    finally:
        pi.load_state_dict_from_url = real_url
    return model, sd


def ref_i3d(src: Path):
    mod = _load("pytorch_i3d", src)
    model = mod.InceptionI3d(400, in_channels=3).eval()
    sd = detfill.fill_state(shapes(model.state_dict()))
    model.load_state_dict(sd)
    return model, sd


def fvd_preprocess(clips: torch.Tensor, size: int = 224) -> torch.Tensor:
    """The FVD input convention, written out independently of echogen: (N, T, H, W) in [0, 1] ->
    (N, 3, T, size, size) in [-1, 1] (bilinear, half-pixel centres; T is kept)."""
    n, t, h, w = clips.shape
    x = F.interpolate(clips.reshape(n * t, 1, h, w), size=(size, size), mode="bilinear", align_corners=False)
    return (x.reshape(n, t, 1, size, size).transpose(1, 2).expand(-1, 3, -1, -1, -1) * 2 - 1).contiguous()


@torch.no_grad()
def ref_outputs(nets: dict, x: dict) -> dict:
    out = {}
    for b in ("alex", "vgg"):
        a3, b3 = x["lpips_a"].expand(-1, 3, -1, -1), x["lpips_b"].expand(-1, 3, -1, -1)
        out[f"lpips_{b}"] = nets[b](a3, b3, normalize=True).flatten()
    out["inception"] = nets["inception"](x["inception_x"].expand(-1, 3, -1, -1))[0].flatten(1)
    i3d, clip = nets["i3d"], fvd_preprocess(x["i3d_x"])
    out["i3d_logits"] = i3d(clip).mean(dim=2)                             # (N, 400, T') -> (N, 400)
    out["i3d_pool"] = i3d.extract_features(clip).flatten(2).mean(dim=2)   # (N, 1024, T', 1, 1) -> (N, 1024)
    return out


def inputs(seed: int, lpips_size: int, inc_size: int, clip: tuple) -> dict:
    g = torch.Generator().manual_seed(seed)
    a = torch.rand(3, 1, lpips_size, lpips_size, generator=g)
    b = torch.rand(3, 1, lpips_size, lpips_size, generator=g)
    b[2] = a[2]                                                           # one identical pair: distance 0
    return {"lpips_a": a, "lpips_b": b, "inception_x": torch.rand(3, 1, inc_size, inc_size, generator=g),
            "i3d_x": torch.rand(*clip, generator=g)}


# ---------------------------------------------------------------------------------------------
# EchoGen side: convert the full-size user files, run, compare
# ---------------------------------------------------------------------------------------------

@torch.no_grad()
def ours_outputs(files: dict, x: dict) -> dict:
    from echogen.eval.perceptual import load_perceptual
    out = {}
    for b in ("alex", "vgg"):
        out[f"lpips_{b}"] = load_perceptual(files[b], "lpips")(x["lpips_a"], x["lpips_b"])
    out["inception"] = load_perceptual(files["inception"], "fid")(x["inception_x"])
    i3d = load_perceptual(files["i3d"], "fvd")
    i3d.cfg.frames = x["i3d_x"].shape[1]                                 # keep T (the reference does not resample)
    out["i3d_logits"], out["i3d_pool"] = i3d.features(x["i3d_x"]), i3d.features(x["i3d_x"], kind="pool")
    return out


def report(tag: str, ref: dict, ours: dict) -> None:
    for k, r in ref.items():
        d = (ours[k].double() - r.double()).abs().max().item()
        scale = r.double().abs().max().item()
        print(f"{tag:12s} {k:12s} shape {tuple(r.shape)!s:14s} max|ref| {scale:10.4g}  "
              f"max abs diff {d:9.3g}  rel {d / max(scale, 1e-30):9.3g}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--i3d-src", required=True, type=Path, help="piergiaj/pytorch-i3d's pytorch_i3d.py")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-echo-sized", action="store_true", help="skip the 112x112 comparison")
    args = ap.parse_args()
    torch.set_num_threads(1)
    from echogen.eval.perceptual.convert import convert_i3d, convert_inception, convert_lpips
    t0 = time.time()
    nets, meta, tensors, user = {}, {"seed": args.seed, "keys": {}, "ignored_keys": {}, "checksum": {}}, {}, {}
    tmp = Path(tempfile.mkdtemp(prefix="perceptual-"))
    for b in ("alex", "vgg"):
        nets[b], full, feats, lin, lin_file = ref_lpips(b)
        meta["keys"][f"{b}_trunk"] = shapes(feats)
        meta["ignored_keys"][f"{b}_trunk"] = shapes({k: v for k, v in full.items() if k not in feats})
        meta["checksum"][f"{b}_trunk"] = checksum(feats)
        tensors.update({f"lin_{b}.{k}": v for k, v in lin.items()})
        torch.save(full, tmp / f"{b}_trunk.pth")
        shutil.copy(lin_file, tmp / f"{b}_lin.pth")
        user[b] = convert_lpips(tmp / f"{b}_trunk.pth", tmp / f"{b}_lin.pth", tmp)
    nets["inception"], sd = ref_inception()
    meta["keys"]["inception"], meta["checksum"]["inception"] = shapes(sd), checksum(sd)
    torch.save(sd, tmp / "pt_inception.pth")
    user["inception"] = convert_inception(tmp / "pt_inception.pth", tmp)
    nets["i3d"], sd = ref_i3d(args.i3d_src)
    meta["keys"]["i3d"], meta["checksum"]["i3d"] = shapes(sd), checksum(sd)
    torch.save(sd, tmp / "rgb_imagenet.pt")
    user["i3d"] = convert_i3d(tmp / "rgb_imagenet.pt", tmp)
    print(f"reference networks built and user files converted in {time.time() - t0:.0f} s ({tmp})")

    x = inputs(args.seed, 64, 40, (2, 16, 24, 24))
    ref = ref_outputs(nets, x)
    args.out.mkdir(parents=True, exist_ok=True)
    save_file({**{f"in.{k}": v.contiguous() for k, v in x.items()},
               **{f"ref.{k}": v.contiguous() for k, v in ref.items()},
               **{k: v.contiguous() for k, v in tensors.items()}}, str(args.out / "perceptual.safetensors"))
    meta["torch"] = torch.__version__
    (args.out / "perceptual.json").write_text(json.dumps(meta, indent=1, sort_keys=True))
    print(f"wrote {args.out}")
    report("fixture", ref, ours_outputs(user, x))
    if not args.no_echo_sized:
        x = inputs(args.seed + 1, 112, 112, (2, 32, 112, 112))
        report("112x112", ref_outputs(nets, x), ours_outputs(user, x))
    shutil.rmtree(tmp)
    print(f"done in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
