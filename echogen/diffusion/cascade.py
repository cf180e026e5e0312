"""The cascade: runs the enabled stages in order, each conditioned on I_c, EF and (after the base)
the previous stage's output upsampled and noise-augmented (the paper's low-res conditioning).

A disabled stage after the base is replaced by plain upsampling (bicubic in space, linear in time)
so the output size is unchanged; the result says so.

A bundle may carry an EF calibration (echogen.ef.EFCalibration, fit by train/fit_ef_calibration.py): the cascade's
measured response to the EF it is conditioned on. sample() then conditions on the calibrated EF so that the asked
EF is what the loop reads on average (calibrate=False: the raw conditioning, as in the paper's evaluation). It is
applied only while the stage files are those it was fit for; otherwise calibration_note says why not.
"""
from __future__ import annotations

import dataclasses
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from echogen.config import CascadeConfig, DiffusionConfig, StageConfig, get_preset, stage_from_dict
from echogen.device import COMPILE_MODES, autocast, resolve_precision
from echogen.diffusion.edm import Denoiser
from echogen.data.resample import upsample_video
from echogen.diffusion.stage import describe, lowres_input, sample_stage, sampling_settings, stage_condition, stage_nfe
from echogen.ef import EFCalibration, EFError, check_efs
from echogen.nets.registry import build_network
from echogen.weights.bundle import WeightsError, file_sha256, load_state_strict, load_tensors, read_manifest, \
    save_tensors, update_manifest

DEFAULT_WEIGHTS = Path(__file__).resolve().parents[2] / "assets" / "weights" / "demo"


def compile_network(net: torch.nn.Module, mode: str = "default", backend: str = "inductor") -> None:
    """torch.compile a stage's network in place (nn.Module.compile: parameter names and saved weights are
    unchanged). Shapes are static: a new batch size or frame count compiles again."""
    if mode not in COMPILE_MODES:
        raise ValueError(f"unknown torch.compile mode '{mode}' (choose from {', '.join(COMPILE_MODES)})")
    net.compile(backend=backend, mode=None if mode == "default" else mode, dynamic=False)


def build_denoiser(stage: StageConfig, diffusion: DiffusionConfig) -> Denoiser:
    return Denoiser(build_network(stage), diffusion.sigma_data)


@dataclass
class StageResult:
    name: str
    video: torch.Tensor     # (B, 1, T, H, W) greyscale in [0, 1], on the CPU
    fps: float
    sampled: bool           # False: the stage was switched off and replaced by upsampling
    seconds: float
    nfe: int                # network evaluations per sample (a CFG pair is one batched call)
    note: str = ""


def _as_frames(frame, batch: int) -> torch.Tensor:
    f = torch.as_tensor(np.asarray(frame, dtype=np.float32)) if not torch.is_tensor(frame) else frame.float()
    if f.ndim == 2:
        f = f[None, None]
    elif f.ndim == 3:
        f = f[:, None]
    if f.ndim != 4 or f.shape[1] != 1:
        raise ValueError(f"conditioning frame must be (H,W), (B,H,W) or (B,1,H,W); got {tuple(f.shape)}")
    if f.min() < 0 or f.max() > 1:
        raise ValueError("conditioning frame must be in [0, 1]")
    return f.expand(batch, -1, -1, -1) if f.shape[0] == 1 else f


SEED_MAX = 2 ** 32 - 1


def check_seed(seed, what: str = "seed") -> int:
    """A seed as an int in 0..SEED_MAX, else a ValueError in project words (never a torch overflow)."""
    try:
        f = float(seed)
        ok = f == f and f == int(f) and 0 <= int(f) <= SEED_MAX
    except (TypeError, ValueError, OverflowError):
        ok = False
    if not ok or isinstance(seed, bool):
        raise ValueError(f"{what} must be a whole number from 0 to {SEED_MAX}, got {str(seed)[:40]}")
    return int(seed) if isinstance(seed, int) else int(f)


class Cascade:
    def __init__(self, config: CascadeConfig, denoisers: dict, device="cpu", source: str = "random-init"):
        missing = [s.name for s in config.stages if s.name not in denoisers]
        if missing:
            raise WeightsError(f"cascade '{config.name}' has no weights for stage(s) {missing}")
        self.config, self.device, self.source = config, torch.device(device), source
        self.denoisers = {k: d.to(self.device).eval() for k, d in denoisers.items()}
        self.precision = "auto"    # sampling precision (echogen.device.autocast); see set_speed
        self.compiled = None       # torch.compile settings once set_speed has compiled the networks
        self.ef_calibration: EFCalibration | None = None   # applied by sample() unless calibrate=False
        self.calibration_note = ""  # why a bundle's calibration is not applied ("" when it is, or there is none)

    def set_speed(self, precision: str = "auto", compile: str | None = None, backend: str = "inductor") -> "Cascade":
        """Sampling precision for every later sample() and, with compile = a torch.compile mode ("default",
        "reduce-overhead", "max-autotune"), each stage's network compiled (compile_network). The first sample
        after compiling pays the compilation (a minute or more per stage with inductor)."""
        resolve_precision(self.device, precision)   # ValueError now, not at the first sample
        self.precision = precision
        if compile:
            for den in self.denoisers.values():
                compile_network(den.net, compile, backend)
            self.compiled = {"backend": backend, "mode": compile}
        return self

    def describe_conditioning(self, ef: float, calibrate: bool = True) -> str:
        """One short line for readouts: which EF the networks are given for a request of ef %, and why (what the
        calibration was measured on is in self.ef_calibration: reader, fit_on; evaluate's summary records it)."""
        if not calibrate:
            return f"the networks were given the asked EF {ef:g} % (EF calibration switched off)"
        if self.ef_calibration is None:
            return (f"the networks were given the asked EF {ef:g} % (" +
                    (self.calibration_note or "this bundle has no EF calibration") + ")")
        cal = self.ef_calibration
        c = float(self.conditioning_ef(float(ef))[0])
        reach = cal.response(c)
        if abs(reach - ef) > 0.5:      # beyond the measured range: the request lies beyond what these weights make
            return (f"the networks were given EF {c:.1f} %, the end of their calibrated range: loops from these weights "
                    f"read about {reach:.0f} % on average there, not {ef:g} % (their measured EF calibration)")
        return (f"the networks were given EF {c:.1f} %: loops from these weights read {ef:g} % on average when given "
                f"that (their measured EF calibration)")

    # ---- construction ------------------------------------------------------------------------
    @classmethod
    def random(cls, config: CascadeConfig | str, device="cpu", seed: int = 0) -> "Cascade":
        config = get_preset(config) if isinstance(config, str) else config
        torch.manual_seed(seed)
        return cls(config, {s.name: build_denoiser(s, config.diffusion) for s in config.stages}, device)

    @classmethod
    def load(cls, bundle=DEFAULT_WEIGHTS, device="cpu", preset: str | None = None) -> "Cascade":
        bundle = Path(bundle)
        man = read_manifest(bundle)
        if preset is not None and man.get("preset") != preset:
            raise WeightsError(f"{bundle} holds preset '{man.get('preset')}', not '{preset}'")
        config = CascadeConfig.from_dict(man["cascade"])
        denoisers = {}
        for st in config.stages:
            fname = man.get("stages", {}).get(st.name)
            if fname is None:
                raise WeightsError(f"{bundle}: manifest lists no weights for stage '{st.name}'")
            tensors, file_cfg, _ = load_tensors(bundle / fname, kind="stage")
            fc = stage_from_dict(file_cfg)
            if (fc.network, fc.unet, fc.network_options) != (st.network, st.unet, st.network_options):
                raise WeightsError(f"{bundle / fname}: network config differs from the bundle's stage "
                                   f"'{st.name}' (weights from another preset?)")
            den = build_denoiser(st, config.diffusion)
            load_state_strict(den.net, tensors, str(bundle / fname))
            denoisers[st.name] = den
        casc = cls(config, denoisers, device, source=str(bundle))
        casc._load_calibration(bundle, man)
        return casc

    def _load_calibration(self, bundle: Path, man: dict) -> None:
        entry = man.get("ef_calibration")
        if not entry:
            return
        try:
            cal = EFCalibration.from_dict(entry)
        except EFError as e:
            raise WeightsError(f"{bundle}/manifest.json: {e}") from None
        files = man["stages"]
        stale = [s for s in self.config.stage_names
                 if cal.stages_sha256.get(s) != file_sha256(bundle / files[s])]
        if stale:
            self.calibration_note = (f"the bundle's EF calibration was fit for other weights of stage(s) {stale} "
                                     "and is not applied: the loops follow the raw EF conditioning (re-fit with "
                                     "train/fit_ef_calibration.py)")
            warnings.warn(f"{bundle}: {self.calibration_note}", stacklevel=3)
        else:
            self.ef_calibration = cal

    def conditioning_ef(self, ef, calibrate: bool = True) -> torch.Tensor:
        """Requested EF(s) in % -> the EF(s) in % the networks are conditioned on (calibrated when the bundle
        carries a valid calibration and calibrate is True; else the requested EFs)."""
        ef_t = check_efs(ef)
        return self.ef_calibration.condition(ef_t) if calibrate and self.ef_calibration is not None else ef_t

    def save(self, bundle, fp16: bool = False, **provenance) -> Path:
        bundle = Path(bundle)
        files = {}
        for st in self.config.stages:
            sd = self.denoisers[st.name].net.state_dict()
            if fp16:
                sd = {k: v.half() if v.is_floating_point() else v for k, v in sd.items()}
            save_tensors(bundle / f"{st.name}.safetensors", sd, "stage", dataclasses.asdict(st),
                         preset=self.config.name)
            files[st.name] = f"{st.name}.safetensors"
        update_manifest(bundle, preset=self.config.name, cascade=self.config.to_dict(), stages=files,
                        provenance=provenance, ef_calibration=None)   # a calibration holds for the weights it was fit on
        return bundle

    # ---- sampling ----------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, frame, ef, *, stages=None, steps=None, guidance=None, sampler=None, sigma_start=None,
               seed: int = 0, callback=None, precision: str | None = None, calibrate: bool = True) -> list[StageResult]:
        """frame: (H,W) / (B,H,W) / (B,1,H,W) in [0,1]; ef: EF in % (float or sequence).
        stages: names to run (the base always runs); steps / guidance / sampler / sigma_start: dicts
        stage -> value (sigma_start: see StageConfig; it applies to super-resolution stages only).
        callback(stage_name, step, total_steps) after each sampler step. precision: as set_speed (default
        self.precision). calibrate: condition on the bundle's calibrated EF (conditioning_ef). Same seed -> same
        output."""
        seed = check_seed(seed)
        ef_t = self.conditioning_ef(ef, calibrate)
        frame_t = _as_frames(frame, ef_t.shape[0])
        b = frame_t.shape[0]
        ef_t = ef_t.expand(b) if ef_t.shape[0] == 1 else ef_t
        enabled = set(self.config.stage_names if stages is None else stages) | {self.config.stages[0].name}
        for what, names in (("stages", enabled), ("steps", steps or {}), ("guidance", guidance or {}),
                            ("sampler", sampler or {}), ("sigma_start", sigma_start or {})):
            for name in sorted(set(names) - set(self.config.stage_names)):
                raise ValueError(f"{what}: unknown stage '{name}' (preset '{self.config.name}' has "
                                 f"{self.config.stage_names})")
        steps, guidance, sampler, sigma_start = steps or {}, guidance or {}, sampler or {}, sigma_start or {}
        settings = {st.name: sampling_settings(st, steps.get(st.name), guidance.get(st.name), sampler.get(st.name),
                                               sigma_start.get(st.name)) for st in self.config.stages}
        for name, s in settings.items():
            if not 0 <= s["sigma_start"] < self.config.diffusion.sigma_max:
                raise ValueError(f"sigma_start of stage '{name}' must be in [0, sigma_max = "
                                 f"{self.config.diffusion.sigma_max:g}) (got {s['sigma_start']:g})")
        dev, results, prev, prev_full = self.device, [], None, None
        for k, st in enumerate(self.config.stages):
            t0 = time.perf_counter()
            if st.name not in enabled:
                prev_full = upsample_video(prev_full, prev.fps, st.frames, st.fps, st.size, st.lowres_resize).clamp(0, 1)
                results.append(StageResult(st.name, prev_full.mean(1, keepdim=True), st.fps, False,
                                           time.perf_counter() - t0, 0, "switched off: plain upsampling instead"))
                prev = results[-1]
                continue
            g = torch.Generator().manual_seed(int(seed) * 1000 + k)
            low = aug = None
            if not st.is_base:
                low, aug = lowres_input(st, prev_full, prev.fps), torch.full((b,), st.lowres_aug_sample)
            cond = {key: v.to(dev) for key, v in stage_condition(st, frame_t, ef_t, low, aug, g).items()}
            cb = (lambda i, n, _n=st.name: callback(_n, i, n)) if callback else None
            with autocast(dev, precision or self.precision):
                x = sample_stage(self.denoisers[st.name], st, self.config.diffusion, cond, settings[st.name], g,
                                 lowres=low, callback=cb)
            prev_full = ((x.float().clamp(-1, 1) + 1) / 2).cpu()      # all channels go to the next stage
            # results hold greyscale: the channel mean (checkpoints that store grey echoes as RGB)
            results.append(StageResult(st.name, prev_full.mean(1, keepdim=True), st.fps, True,
                                       time.perf_counter() - t0, stage_nfe(settings[st.name]),
                                       describe(settings[st.name])))
            prev = results[-1]
        return results
