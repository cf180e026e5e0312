"""Weights I/O: safetensors files that carry their config, and "weights bundles" (a folder + manifest).

Every file written here is a .safetensors file whose metadata holds, as JSON strings:
  "echogen_kind"   : "stage" | "regressor" | "tracer"
  "echogen_config" : the model's config (a dataclass serialised with dataclasses.asdict)
  plus any extra string fields (preset, stage name, provenance).
Nothing is ever unpickled.

A bundle is a folder with manifest.json:
  {"format": "echogen-bundle/1", "preset": "demo", "cascade": {...CascadeConfig...},
   "stages": {"base": "base.safetensors", ...}, "regressor": "regressor.safetensors" | null,
   "tracer": "tracer.safetensors" (optional: the LV tracer, echogen.nets.tracer.load_tracer), "provenance": {...}}
Regressor and tracer files carry "trained_on" (what their training data was) in their metadata; the
readouts name it (echogen.eval.readout.model_provenance).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

MANIFEST = "manifest.json"
BUNDLE_FORMAT = "echogen-bundle/1"


def file_sha256(path, chunk: int = 1 << 22) -> str:
    """sha256 hex digest of a file (provenance of converted checkpoints, the stage files an EF calibration holds for,
    the app's bundled examples)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while b := f.read(chunk):
            h.update(b)
    return h.hexdigest()


class WeightsError(RuntimeError):
    """A weights file or bundle is missing, malformed, or does not match what was asked for."""


def save_tensors(path, tensors: dict[str, torch.Tensor], kind: str, config: dict, **extra: str) -> None:
    """Write tensors (made contiguous, on CPU) with config JSON in the safetensors metadata."""
    meta = {"echogen_kind": kind, "echogen_config": json.dumps(config, sort_keys=True)}
    meta.update({k: str(v) for k, v in extra.items()})
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    save_file(tensors, str(tmp), metadata=meta)
    os.replace(tmp, path)  # atomic: a crash never leaves a half-written weights file


def read_metadata(path) -> dict[str, str]:
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file not found: {path}")
    try:
        from safetensors import safe_open
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError) as e:
        raise WeightsError(f"{path}: not a readable .safetensors file ({e})") from None


def data_summary(trained_on: str) -> str:
    """What a reader learned from, in a few words for a readout line, from a weights file's "trained_on" text
    (which may be a whole training history: it stays in the file's metadata, `ef --json` and the app's details):
    the datasets it names (as echogen.eval.readout.describe_dataset names them) and, when all are EchoGen's own,
    that they are synthetic; text it does not recognise is kept as it is (cut to 90 characters)."""
    s = trained_on.lower()
    ours = "echogen" in s
    names = ["EchoNet-Dynamic (real echoes)"] if "echonet-dynamic" in s else []
    names += [f"EchoNet-format data '{n}'" for n in re.findall(r"echonet-format data '([^']*)'", trained_on, re.I)
              if "echonet-dynamic" not in n.lower()]
    real = bool(names)
    if ours and "v2" in s:
        names.append("EchoGen simulator v2")
    if ours and ("v1" in s or ("phantom" in s and "v2" not in s)):
        names.append("EchoGen phantom v1")
    if ours and "cascade samples" in s:
        names.append("EchoGen cascade samples")
    if not names:
        return trained_on if len(trained_on) <= 90 else trained_on[:87].rstrip() + "..."
    return " + ".join(names) + ("" if real else " (synthetic echoes only)")


def steps_summary(steps) -> str:
    """A weights file's "steps" label without its breakdown: "9000 (2000 + 4000 + 3000)" -> "9000"."""
    return re.sub(r"\s*\(.*\)\s*$", "", str(steps)) or str(steps)


def load_tensors(path, kind: str | None = None) -> tuple[dict[str, torch.Tensor], dict, dict[str, str]]:
    """Return (tensors, config dict, raw metadata). Checks the kind when given."""
    meta = read_metadata(path)
    if "echogen_config" not in meta:
        raise WeightsError(f"{path}: no echogen_config in metadata (not an EchoGen weights file)")
    if kind is not None and meta.get("echogen_kind") != kind:
        raise WeightsError(f"{path}: holds a '{meta.get('echogen_kind')}' model, expected '{kind}'")
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise WeightsError(f"{path}: could not read tensors ({e})") from None
    return tensors, json.loads(meta["echogen_config"]), meta


def name_keys(keys, n: int = 6) -> str:
    """'a, b, c, ... (N more)': a readable sample of key names for error messages."""
    keys = sorted(keys)
    return ", ".join(keys[:n]) + (f", ... ({len(keys) - n} more)" if len(keys) > n else "")


def key_mismatches(found: dict, expected: dict, ignored: str | None = None) -> list[str]:
    """What keeps `found` (name -> tensor or shape) from fitting `expected` (name -> shape): missing,
    unexpected (unless their name fully matches the regex `ignored`) and mis-shaped keys, as message parts."""
    shape_of = lambda v: tuple(v.shape) if hasattr(v, "shape") else tuple(v)  # noqa: E731
    missing = set(expected) - set(found)
    unexpected = {k for k in set(found) - set(expected) if not (ignored and re.fullmatch(ignored, k))}
    shape = sorted(k for k in set(found) & set(expected) if shape_of(found[k]) != shape_of(expected[k]))
    parts = []
    if missing:
        parts.append(f"missing {len(missing)} key(s): {name_keys(missing)}")
    if unexpected:
        parts.append(f"unexpected {len(unexpected)} key(s): {name_keys(unexpected)}")
    if shape:
        k = shape[0]
        parts.append(f"{len(shape)} shape mismatch(es), e.g. {k}: file {shape_of(found[k])} "
                     f"vs model {shape_of(expected[k])}")
    return parts


def load_state_strict(module: torch.nn.Module, tensors: dict[str, torch.Tensor], source: str) -> None:
    """Load a state dict, failing with a message naming every missing, extra or mis-shaped key.

    Tensors are cast to the parameter's dtype (bundles may store fp16)."""
    own = module.state_dict()
    parts = key_mismatches(tensors, own)
    if parts:
        raise WeightsError(f"{source}: weights do not fit the model: " + "; ".join(parts))
    module.load_state_dict({k: v.to(own[k].dtype) for k, v in tensors.items()}, strict=True)


def read_manifest(bundle) -> dict:
    bundle = Path(bundle)
    mpath = bundle / MANIFEST
    if not bundle.is_dir():
        raise WeightsError(f"weights bundle not found: {bundle} (a folder with {MANIFEST})")
    if not mpath.is_file():
        raise WeightsError(f"{bundle}: no {MANIFEST}; not an EchoGen weights bundle")
    try:
        man = json.loads(mpath.read_text())
    except json.JSONDecodeError as e:
        raise WeightsError(f"{mpath}: invalid JSON ({e})") from None
    if man.get("format") != BUNDLE_FORMAT:
        raise WeightsError(f"{mpath}: unknown format {man.get('format')!r}, expected {BUNDLE_FORMAT}")
    return man


def resolve_weights(path_or_bundle, key: str, what: str, script: str) -> Path:
    """The weights file of one model: a .safetensors path as given, or the file a bundle's manifest names under
    `key` (e.g. "tracer"); `what` names the model in errors ("LV tracer"), `script` is what trains one."""
    p = Path(path_or_bundle)
    if p.is_dir():
        name = read_manifest(p).get(key)
        if not name:
            raise WeightsError(f"{p}: this weights bundle has no {what} (manifest '{key}' is empty); "
                               f"train one with {script} --bundle")
        p = p / name
        if not p.is_file():
            raise WeightsError(f"{p}: the bundle's manifest names this {key} file, but it is missing")
    elif not p.exists():
        raise WeightsError(f"{key} weights not found: {p}")
    return p


class ModelFile:
    """One kind of small model kept as a .safetensors file with its config in the metadata (the LV tracer, the EF
    regressor, the orientation network): save, resolve (a file, or the one a bundle's manifest names under the
    kind), has, load: one implementation for every such model.

    kind: the metadata "echogen_kind" and the manifest key; what: the model's name in errors ("LV tracer");
    script: what trains one; build: config dict -> (model, config), raising TypeError / ValueError when the
    config does not fit."""

    def __init__(self, kind: str, what: str, script: str, build):
        self.kind, self.what, self.script, self.build = kind, what, script, build

    def save(self, path, model: torch.nn.Module, cfg, **extra: str) -> Path:
        """The state dict (of a DDP-wrapped model too) with cfg.to_dict() in the metadata; extra strings
        (trained_on, steps, ...) go into the metadata too."""
        save_tensors(path, getattr(model, "module", model).state_dict(), self.kind, cfg.to_dict(), **extra)
        return Path(path)

    def resolve(self, path_or_bundle) -> Path:
        return resolve_weights(path_or_bundle, self.kind, self.what, self.script)

    def has(self, path_or_bundle) -> bool:
        try:
            self.resolve(path_or_bundle)
            return True
        except WeightsError:
            return False

    def load(self, path_or_bundle, device=None) -> tuple:
        """(model in eval mode on device, config); the file's metadata on model.meta, its path on model.source."""
        p = self.resolve(path_or_bundle)
        tensors, cfg_dict, meta = load_tensors(p, self.kind)
        try:
            model, cfg = self.build(cfg_dict)
        except (TypeError, ValueError) as e:
            raise WeightsError(f"{p}: invalid {self.kind} config ({e})") from None
        load_state_strict(model, tensors, str(p))
        model.meta = dict(meta)
        model.source = str(p)
        return model.to(device or "cpu").eval(), cfg


def write_manifest(bundle, manifest: dict) -> None:
    bundle = Path(bundle)
    bundle.mkdir(parents=True, exist_ok=True)
    manifest = {"format": BUNDLE_FORMAT, **manifest}
    tmp = bundle / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True))
    os.replace(tmp, bundle / MANIFEST)


def update_manifest(bundle, **fields) -> dict:
    """Merge fields into a bundle's manifest (creating it if absent). dict fields are merged one level."""
    bundle = Path(bundle)
    man = read_manifest(bundle) if (bundle / MANIFEST).is_file() else {}
    for k, v in fields.items():
        if isinstance(v, dict) and isinstance(man.get(k), dict):
            man[k] = {**man[k], **v}
        else:
            man[k] = v
    man.pop("format", None)
    write_manifest(bundle, man)
    return read_manifest(bundle)


def name_shipped(bundle, kind: str, filename: str, steps=None) -> dict:
    """Name a newly shipped file (kind = "regressor" | "tracer") in a bundle's manifest and, when its steps label
    is known, record it in provenance.trained_steps (so the manifest never keeps a replaced model's steps)."""
    man = read_manifest(bundle) if (Path(bundle) / MANIFEST).is_file() else {}
    trained = dict((man.get("provenance") or {}).get("trained_steps") or {})
    if steps:
        trained[kind] = str(steps)
    else:
        trained.pop(kind, None)
    return update_manifest(bundle, **{kind: filename}, provenance={"trained_steps": trained})


def find_bundles(root) -> list[Path]:
    """All bundle folders directly under root (each holding a manifest.json)."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if (p / MANIFEST).is_file())


def link_bundle(src, out) -> Path:
    """A new bundle at `out` whose files are src's, referenced by relative path (no weights copied): a variant
    of src (e.g. distilled stages, train/distill.py) that replaces some entries and keeps the rest."""
    src, out = Path(src), Path(out)
    man = read_manifest(src)
    rel = lambda f: os.path.relpath((src / f).resolve(), out.resolve())  # noqa: E731
    man["stages"] = {k: rel(v) for k, v in man.get("stages", {}).items()}
    for key in ("regressor", "tracer"):
        if man.get(key):
            man[key] = rel(man[key])
    man.pop("format", None)
    write_manifest(out, man)
    return out
