"""`python -m echogen <command>`: one entry point, each command in its own module.

Each command module defines `add_arguments(parser)` and `main(args) -> int`. Expected failures
(bad input, missing weights) raise `UserError` (or one of the library's own error types) and are
printed as one line with a non-zero exit, never a traceback.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, one-line help)
COMMANDS = {
    "generate": ("echogen.cli.commands.generate", "generate an echo loop from one frame and an EF"),
    "prepare": ("echogen.cli.commands.prepare", "preprocess an input image/DICOM/clip to the model's 112x112 frame"),
    "phantom": ("echogen.cli.commands.phantom", "write a synthetic EchoNet-format dataset with known EF"),
    "ef": ("echogen.cli.commands.ef", "read the EF of a clip (regressor and/or LV tracing)"),
    "evaluate": ("echogen.cli.commands.evaluate", "the paper's counterfactual / factual evaluation"),
    "bench": ("echogen.cli.commands.bench", "time each stage of a preset"),
    "convert": ("echogen.cli.commands.convert", "convert published EchoDiffusion / EchoNet checkpoints"),
    "pool": ("echogen.cli.commands.pool", "build a case pool for the teaching modes"),
    "report": ("echogen.cli.commands.report", "print trainer / review session summaries"),
    "synth": ("echogen.cli.commands.synth", "generate a synthetic EchoNet-format dataset (EF-filtered, torchrun-sharded)"),
}


class UserError(ValueError):
    """An expected failure caused by the user's input; printed as one line."""


def add_speed_arguments(p) -> None:
    """--precision / --compile, shared by the commands that sample (Cascade.set_speed)."""
    from echogen.device import COMPILE_MODES, PRECISIONS
    p.add_argument("--precision", default="auto", choices=PRECISIONS,
                   help="sampling precision: auto = float32 (TF32 convolutions on CUDA; bf16 was no faster on an H200) (default auto)")
    p.add_argument("--compile", nargs="?", const="default", default=None, metavar="MODE",
                   choices=COMPILE_MODES,
                   help="torch.compile each stage's network (MODE default | reduce-overhead | max-autotune); "
                        "the first sample pays the compilation (minutes); worth it for many samples on a GPU")


def add_input_limit_arguments(p) -> None:
    """--max-file-mb / --max-megapixels / --max-frames: what one input may cost (echogen.data.inputs.Limits;
    defaults from ECHOGEN_MAX_* or the library's)."""
    p.add_argument("--max-file-mb", type=float, default=None, help="largest input file in MB (default 256)")
    p.add_argument("--max-megapixels", type=float, default=None,
                   help="largest input frame in megapixels, checked before decoding (default 8.3: a 4K screen; "
                        "also at most 8192 px a side)")
    p.add_argument("--max-frames", type=int, default=None, help="frames read from one input at most (default 600)")


def input_limits(args):
    """The input limits from the add_input_limit_arguments flags (and the environment)."""
    from echogen.data.inputs import Limits
    return Limits.from_env(max_file_mb=getattr(args, "max_file_mb", None),
                           max_megapixels=getattr(args, "max_megapixels", None),
                           max_frames=getattr(args, "max_frames", None))


def apply_input_limits(args):
    """input_limits(args), set process-wide (the app: every input it reads)."""
    from echogen.data.inputs import set_limits
    return set_limits(input_limits(args))


def apply_speed(cascade, args):
    """Cascade.set_speed from the add_speed_arguments flags."""
    return cascade.set_speed(args.precision, args.compile)


def _expected_errors() -> tuple:
    from echogen.data.video_io import VideoError
    from echogen.weights.bundle import WeightsError
    errs = [UserError, VideoError, WeightsError, FileNotFoundError, KeyError, ValueError]
    from echogen.data.inputs import InputError
    errs.append(InputError)
    return tuple(errs)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m echogen", description="EchoGen: echo video synthesis")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    loaded = {}
    for name, (modname, help_) in COMMANDS.items():
        try:
            mod = importlib.import_module(modname)
        except ModuleNotFoundError as e:
            if e.name != modname:
                raise
            continue  # command not built yet
        loaded[name] = mod
        p = sub.add_parser(name, help=help_, description=help_)
        mod.add_arguments(p)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    from echogen.device import tune_cpu_malloc
    tune_cpu_malloc()
    try:
        return int(loaded[args.command].main(args) or 0)
    except _expected_errors() as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        print(f"error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def run() -> None:
    """Console script `echogen` (= python -m echogen)."""
    sys.exit(main())
