"""The A4C input check (echogen.eval.readout.assess_file) on files, and its false-warning rate on a dataset.

    python bench/input_check.py FILE [FILE ...]                     # score + sub-scores per file
    python bench/input_check.py --data data/sim2_1k --n 60          # warned share of the first N TEST clips

Files are read and checked as the app, `ef` and `generate` do (echogen.data.clips.read_input, then
echogen.eval.readout.assess_frames: the clip, in its standard view), with the LV tracer and orientation network
of --weights (default: the demo bundle); --upside-down turns every file upside down first (an apex-down display
should pass as its upright self does). Non-cardiac ultrasound for the first form: pydicom/pydicom-data's US1_UNCR,
OBXXXX1A, gdcm-US-ALOKA-16 (fetch that repository yourself; nothing here downloads), pydicom's own CT_small.dcm and
MR_small.dcm, any photo.
"""
import argparse
from pathlib import Path

import numpy as np
import torch

from echogen.data.echonet import read_filelist
from echogen.data.clips import read_input
from echogen.data.inputs import InputError
from echogen.eval.readout import assess_frames, bundle_readers

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("files", nargs="*")
p.add_argument("--data", default=None, help="an EchoNet-format dataset: score its first --n TEST clips")
p.add_argument("--n", type=int, default=60)
p.add_argument("--weights", default="assets/weights/demo", help="bundle whose LV tracer joins the check")
p.add_argument("--threads", type=int, default=1)
p.add_argument("--upside-down", action="store_true", help="turn every input upside down before the check")
args = p.parse_args()
torch.set_num_threads(args.threads)
tracer, orient = bundle_readers(args.weights)


def check(path):
    frames, info = read_input(path)
    if args.upside_down:
        frames = np.ascontiguousarray(frames[:, ::-1])
    return assess_frames(frames, float(info.get("fps") or 0), tracer, None, orient)


for f in args.files:
    try:
        a = check(f)
    except InputError as e:
        print(f"{Path(f).name}: refused ({e})")
        continue
    subs = " / ".join(f"{k} {v:.2f}" for k, v in a.checks.items())
    print(f"{Path(f).name}: score {a.score:.3f} ({'ok' if a.ok else 'WARNED'}; {subs})")
if args.data:
    rows = [r for r in read_filelist(args.data) if r["Split"] == "TEST"][:args.n]
    scores = np.array([check(Path(args.data) / "Videos" / f"{r['FileName']}.avi").score for r in rows])
    print(f"{args.data}: {len(scores)} TEST clips, warned {int((scores < 0.5).sum())}, lowest score "
          f"{scores.min():.2f}, median {np.median(scores):.2f}")
