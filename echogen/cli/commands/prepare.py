"""`python -m echogen prepare --image IN [--frame K] --out frame.png`: the model's 112x112 input frame, in the
standard view `generate` and the app condition on (an apex-down display turned apex-up, a mirrored one mirrored
back: echogen.nets.orient)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from echogen.cli.main import UserError, add_input_limit_arguments, input_limits


def add_arguments(p) -> None:
    p.add_argument("--image", required=True, help="DICOM, PNG/JPEG/BMP/TIFF, AVI/MP4/GIF clip or .npy")
    p.add_argument("--frame", type=int, default=0, help="frame of a multi-frame input (default 0)")
    p.add_argument("--size", type=int, default=112, help="output side in pixels (default 112)")
    p.add_argument("--out", required=True, help="output image (.png) or array (.npy)")
    p.add_argument("--orientation", default="auto", choices=("auto", "as-is", "mirror"),
                   help="the frame in the standard view, as generate conditions on it: an apex-down input turned "
                        "apex-up, one shown mirrored (the LV on the left) mirrored back: auto = when the fan's shape / "
                        "the orientation network of --weights say so (default), as-is = neither, mirror = always")
    p.add_argument("--weights", default=None, help="the bundle whose orientation network decides (default: the "
                   "bundled demo weights)")
    add_input_limit_arguments(p)


def main(args) -> int:
    from PIL import Image

    from echogen.data.inputs import SECTOR_SAID, prepare_frame

    out = Path(args.out)
    if out.suffix.lower() not in (".png", ".npy", ".bmp", ".tif", ".tiff", ".jpg", ".jpeg"):
        raise UserError(f"--out {out.name}: use .png (or .npy for the float array)")
    if args.size < 16:
        raise UserError(f"--size must be at least 16, got {args.size}")
    limits = input_limits(args)
    frame, info = prepare_frame(args.image, frame=args.frame, size=args.size, limits=limits)
    from echogen.data.clips import read_input
    from echogen.diffusion.cascade import DEFAULT_WEIGHTS
    from echogen.nets.orient import bundle_orient, frame_in_view, view_note
    orient = bundle_orient(Path(args.weights or DEFAULT_WEIGHTS)) if args.orientation == "auto" else None
    frame, view = frame_in_view(frame, read_input(args.image, limits)[0], orient, args.orientation)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() == ".npy":
        np.save(out, frame)
    else:
        Image.fromarray((frame * 255.0 + 0.5).astype(np.uint8)).save(out)
    crop = info.get("crop")
    print(f"wrote {out} ({args.size}x{args.size}) from frame {info['frame']} of {info['n_frames']} "
          f"[{info['kind']}], {SECTOR_SAID[info['sector']]}, crop box {crop}, "
          f"{info['masked_pixels']} bright pixels masked outside the sector")
    if view_note(view):
        print(f"  view: {view_note(view)}")
    return 0
