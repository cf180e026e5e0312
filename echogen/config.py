"""Configs as dataclasses, with named presets. Saved as JSON with every checkpoint and weights file.

Notation follows the paper (../shared/PAPER.md) and EDM (Karras et al. 2022).
Videos are (B, C, T, H, W), pixels in [0, 1] outside the diffusion and [-1, 1] inside it.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field

SOURCE_FPS = 50.0  # EchoNet-Dynamic's frame rate


@dataclass
class UNetConfig:
    """Space-time factorised 3D UNet (one per cascade stage)."""
    channels: int = 1                 # video channels (greyscale echo)
    cond_channels: int = 1            # conditioning frame I_c channels (repeated over frames)
    lowres_channels: int = 0          # previous stage's output channels (0 for the base stage)
    base_width: int = 64
    channel_mult: tuple = (1, 2, 4)
    num_res_blocks: int = 2
    spatial_attn_levels: tuple = ()  # levels with per-frame spatial self-attention
    temporal_attn_levels: tuple = ()  # levels with per-pixel temporal self-attention
    cross_attn_levels: tuple = (2,)  # levels with cross-attention to the EF token
    mid_attn: bool = True             # space-time (spatial then temporal) attention at the bottleneck
    heads: int = 8
    head_dim: int = 64
    ef_dim: int = 64                  # EF token width (Linear 1 -> ef_dim)
    temporal_kernel: int = 3
    groups: int = 8                   # GroupNorm groups
    dropout: float = 0.0


@dataclass
class StageConfig:
    """One cascade stage: what it outputs and how it is trained and sampled."""
    name: str
    size: int                        # output height = width
    frames: int                      # output frame count
    fps: float                       # output frame rate (frames span frames / fps seconds)
    unet: UNetConfig = field(default_factory=UNetConfig)
    network: str = "spacetime"       # network class (echogen.nets.registry.NETWORKS); "spacetime" uses `unet`
    network_options: dict = field(default_factory=dict)  # config of another network class
    lowres_resize: str = "aligned"   # aligned: frame-time-aligned linear + bicubic; trilinear | nearest: F.interpolate
    frame_resize: str = "area"       # how I_c is resized to the stage: area | nearest (imagen's checkpoints)
    # sampling
    sampler: str = "heun"            # heun | euler | dpmpp_2m
    steps: int = 32
    guidance: float = 5.0            # classifier-free guidance weight on EF (1 = no guidance)
    S_churn: float = 80.0            # EDM churn; gamma is capped at sqrt(2) - 1
    S_tmin: float = 0.05
    S_tmax: float = 50.0
    S_noise: float = 1.003
    dynamic_threshold: float = 0.95  # percentile for dynamic thresholding (0 = off)
    lowres_aug_sample: float = 0.2   # noise-augmentation level t of the low-res input at sampling
    sigma_start: float = 0.0         # SR stages, >0: start at this sigma from the noised upsampled low-res
                                     # video (SDEdit, Meng et al. 2022) instead of noise at sigma_max; 0: paper
    sample_sigma_min: float = 0.0    # >0: the sampling schedule's last noise level before 0 (distilled stages,
                                     # echogen.diffusion.distill); 0: the cascade's DiffusionConfig.sigma_min
    # training
    lowres_aug_max: float = 1.0      # training draws t ~ U[0, lowres_aug_max) per batch
    p_drop_ef: float = 0.1           # classifier-free guidance: drop EF with this probability
    p_drop_frame: float = 0.0        # the paper never drops I_c
    p_ignore_time: float = 0.25      # image/video joint training: skip temporal layers
    batch_size: int = 4
    crop: int = 0                    # >0: train on random spatial crops of this size (SR stages)
    lr: float = 5e-4

    @property
    def is_base(self) -> bool:
        return self.unet.lowres_channels == 0


@dataclass
class DiffusionConfig:
    """EDM's noise distribution and preconditioning (sigma_data 0.25 as in the paper)."""
    sigma_min: float = 0.002
    sigma_max: float = 80.0
    sigma_data: float = 0.25
    rho: float = 7.0
    P_mean: float = -1.2
    P_std: float = 1.2


@dataclass
class CascadeConfig:
    name: str
    stages: list
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    clip_seconds: float = 2.0
    description: str = ""

    def stage(self, name: str) -> StageConfig:
        for s in self.stages:
            if s.name == name:
                return s
        raise KeyError(f"preset '{self.name}' has no stage '{name}' (stages: {self.stage_names})")

    @property
    def stage_names(self) -> list:
        return [s.name for s in self.stages]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @staticmethod
    def from_dict(d: dict) -> "CascadeConfig":
        stages = [stage_from_dict(s) for s in d["stages"]]
        return CascadeConfig(name=d["name"], stages=stages,
                             diffusion=DiffusionConfig(**d.get("diffusion", {})),
                             clip_seconds=d.get("clip_seconds", 2.0),
                             description=d.get("description", ""))


def _tuples(d: dict) -> dict:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}


def dataclass_from_dict(cls, d: dict, what: str, error=ValueError):
    """cls(**d) from JSON (lists back to tuples), refusing keys cls does not have with `error` naming them."""
    unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
        raise error(f"unknown {what} config keys: {sorted(unknown)}")
    return cls(**_tuples(d))


def copy_preset(presets: dict, name: str, what: str):
    """A fresh copy of presets[name] (a dataclass), or a KeyError listing the names."""
    if name not in presets:
        raise KeyError(f"unknown {what} preset '{name}' (choose from {', '.join(presets)})")
    return dataclasses.replace(presets[name])


def stage_from_dict(d: dict) -> StageConfig:
    d = dict(d)
    unet = UNetConfig(**_tuples(d.pop("unet", {})))
    known = {f.name for f in dataclasses.fields(StageConfig)}
    unknown = set(d) - known
    if unknown:
        raise ValueError(f"unknown stage config keys: {sorted(unknown)}")
    return StageConfig(unet=unet, **d)


# ---------------------------------------------------------------------------------------------
# Presets
# ---------------------------------------------------------------------------------------------

def _imagen_options(lowres: bool, cross=(True, True, True), attend: bool = True, me: bool = False) -> dict:
    """network_options of the published EchoDiffusion networks (network "imagen3d"): base width 64,
    2 resnet blocks per level, widths (1, 2, 4), EF cross-attention where `cross` says, space-time
    attention at the bottleneck when `attend`, 8 heads x 64, 3-channel (grey RGB) videos.
    Cross-attention: the configs say `layer_cross_attns: [False, False, True]`, but the authors built the
    networks from OmegaConf, whose list reaches Unet3D's cast_tuple as one (truthy) value per level: the
    trained networks have EF cross-attention at every level (echogen/weights/convert.py, authors_unet_kwargs);
    4SCM's spatial stage (`layer_cross_attns: False`) has none."""
    return dict(dim=64, dim_mults=[1, 2, 4], num_resnet_blocks=2, layer_cross_attns=list(cross),
                attend_at_middle=attend, memory_efficient=me, lowres_cond=lowres, channels=3, cond_images_channels=3,
                text_embed_dim=1, max_text_len=1, attn_heads=8, attn_dim_head=64, resnet_groups=8, num_time_tokens=2,
                learned_sinu_pos_emb_dim=16, attn_pool_num_latents=32, init_cross_embed_kernel_sizes=[3, 7, 15],
                time_rel_pos_bias_depth=2, final_conv_kernel_size=3)


def imagen_unet_mirror(o: dict) -> UNetConfig:
    """The UNetConfig fields that describe an "imagen3d" network (channels, widths, attention levels);
    its weights and layers come from network_options."""
    return UNetConfig(channels=o["channels"], cond_channels=1, lowres_channels=o["channels"] if o["lowres_cond"] else 0,
                      base_width=o["dim"], channel_mult=tuple(o["dim_mults"]), num_res_blocks=o["num_resnet_blocks"],
                      cross_attn_levels=tuple(i for i, c in enumerate(o["layer_cross_attns"]) if c),
                      mid_attn=bool(o["attend_at_middle"]), heads=o["attn_heads"], head_dim=o["attn_dim_head"],
                      ef_dim=o["dim"], groups=o["resnet_groups"])


def _paper_stage(name, size, frames, fps, steps, batch, lowres, S_churn, crop=0, lowres_resize="trilinear",
                 **opts) -> StageConfig:
    # the published checkpoints' sampling settings (EchoDiffusion diffusion/configs/*.yaml); convert them
    # with `python -m echogen convert` (echogen/weights/convert.py builds the same configs from config.yaml)
    return StageConfig(name=name, size=size, frames=frames, fps=fps, steps=steps, batch_size=batch,
                       unet=imagen_unet_mirror(_imagen_options(lowres, **opts)),
                       network="imagen3d", network_options=_imagen_options(lowres, **opts),
                       lowres_resize=lowres_resize, frame_resize="nearest", sampler="heun", guidance=5.0, S_churn=S_churn, crop=crop)


def imagen_test_stage(lowres: bool, frames: int, size: int = 16, dim: int = 8, levels: int = 2) -> StageConfig:
    """A small "imagen3d" stage (the paper networks' layers at a test size): EF cross-attention at the
    deepest level, space-time attention at the bottleneck, guidance 5. For tests and bench/gpu_parity.py."""
    opts = dict(dim=dim, dim_mults=[1] + [2] * (levels - 1), num_resnet_blocks=1,
                layer_cross_attns=[False] * (levels - 1) + [True], attend_at_middle=True, memory_efficient=lowres,
                lowres_cond=lowres, channels=3, cond_images_channels=3, attn_heads=2, attn_dim_head=dim,
                resnet_groups=4, attn_pool_num_latents=4)
    return StageConfig(name="sr" if lowres else "base", size=size, frames=frames, fps=8.0, steps=2,
                       unet=imagen_unet_mirror(opts), network="imagen3d", network_options=opts, guidance=5.0)


def preset_1scm() -> CascadeConfig:
    # 1SCM_v2.yaml sets no resize_mode (imagen's default, nearest; unused by a single stage)
    return CascadeConfig("1SCM", [_paper_stage("base", 112, 16, 8.0, 64, 4, False, 160.0, attend=False,
                                               lowres_resize="nearest")],
                         description="Paper 1SCM (published 1SCM_v2): one stage, 112x112 x 16 frames @ 8 fps.")


def preset_2scm() -> CascadeConfig:
    return CascadeConfig("2SCM", [
        _paper_stage("base", 56, 16, 8.0, 32, 16, False, 80.0),
        _paper_stage("spatiotemporal", 112, 64, 32.0, 64, 10, True, 160.0, crop=56, me=True),
    ], description="Paper 2SCM (published 2SCM_v6): 56x56x16 @ 8 fps -> spatio-temporal SR to 112x112x64 @ 32 fps.")


def preset_4scm() -> CascadeConfig:
    # 4SCM_v2.yaml sets no resize_mode: imagen resized its low-res inputs with 'nearest'
    return CascadeConfig("4SCM", [
        _paper_stage("base", 56, 16, 8.0, 32, 16, False, 40.0, lowres_resize="nearest"),
        _paper_stage("temporal1", 56, 32, 16.0, 32, 20, True, 80.0, lowres_resize="nearest", me=True),
        _paper_stage("temporal2", 56, 64, 32.0, 32, 8, True, 160.0, lowres_resize="nearest", me=True),
        _paper_stage("spatial", 112, 64, 32.0, 64, 5, True, 160.0, crop=56, cross=(False, False, False), attend=False,
                     lowres_resize="nearest"),
    ], description="Paper 4SCM (published 4SCM_v2): 56x16 -> 56x32 -> 56x64 -> 112x64 (8 -> 16 -> 32 -> 32 fps).")


def preset_demo() -> CascadeConfig:
    """CPU-sized cascade of the paper's shape. Output: 112x112 x 32 frames @ 25 fps = 1.28 s,
    i.e. every 2nd frame of a 50 fps EchoNet clip (one heartbeat at >= 47 bpm).
    The super-resolution stages start from their noised input (sigma_start, SDEdit) rather than from
    pure noise: from pure noise they pulled the EF toward the middle (docs/RESULTS.md, issue 6).
    Sampling: DPM-Solver++(2M) everywhere, 10 + 4 + 4 = 18 network evaluations per video (the base's
    cond/uncond pair is one batched evaluation), half of the earlier heun 12 / 8 / 6 setting (37) at the
    same counterfactual R^2 (docs/PERF.md change 10)."""
    base = StageConfig(
        name="base", size=28, frames=16, fps=12.5, sampler="dpmpp_2m", steps=10, guidance=5.0, S_churn=0.0,
        unet=UNetConfig(base_width=24, channel_mult=(1, 2, 4), num_res_blocks=1, cross_attn_levels=(2,),
                        temporal_attn_levels=(2,), mid_attn=True, heads=4, head_dim=24, ef_dim=32),
        batch_size=8, lr=5e-4, lowres_aug_max=0.0)
    spatial = StageConfig(
        name="spatial", size=112, frames=16, fps=12.5, sampler="dpmpp_2m", steps=4, guidance=1.0,
        S_churn=0.0, sigma_start=0.25,
        unet=UNetConfig(base_width=16, channel_mult=(1, 2, 2), num_res_blocks=1, lowres_channels=1,
                        cross_attn_levels=(), mid_attn=False, heads=2, head_dim=16, ef_dim=16),
        batch_size=8, crop=48, lr=5e-4, lowres_aug_max=0.5, p_ignore_time=0.25)
    temporal = StageConfig(
        name="temporal", size=112, frames=32, fps=25.0, sampler="dpmpp_2m", steps=4, guidance=1.0,
        S_churn=0.0, sigma_start=0.15,
        unet=UNetConfig(base_width=16, channel_mult=(1, 2, 2), num_res_blocks=1, lowres_channels=1,
                        cross_attn_levels=(), temporal_attn_levels=(2,), mid_attn=False, heads=2,
                        head_dim=16, ef_dim=16),
        batch_size=4, crop=48, lr=5e-4, lowres_aug_max=0.5, p_ignore_time=0.0)
    return CascadeConfig("demo", [base, spatial, temporal], clip_seconds=1.28,
                         description="CPU demo: 28x28x16 @ 12.5 fps -> 112x112x16 -> 112x112x32 @ 25 fps.")


def preset_tiny() -> CascadeConfig:
    """Smallest cascade of the demo's shape, for tests only."""
    c = preset_demo()
    c.name, c.description = "tiny", "Test-sized cascade: 8x8x4 -> 16x16x4 -> 16x16x8."
    dims = [(8, 4, 2.0), (16, 4, 2.0), (16, 8, 4.0)]
    for s, (size, frames, fps) in zip(c.stages, dims):
        s.size, s.frames, s.fps, s.steps, s.crop, s.batch_size = size, frames, fps, 3, 0, 2
        s.unet.base_width, s.unet.channel_mult, s.unet.groups = 8, (1, 2), 4
        s.unet.heads, s.unet.head_dim, s.unet.ef_dim = 2, 8, 8
        s.unet.cross_attn_levels = (1,) if s.is_base else ()
        s.unet.temporal_attn_levels = (1,)
        s.unet.spatial_attn_levels = (1,)
    c.clip_seconds = 2.0
    return c


PRESETS = {"demo": preset_demo, "tiny": preset_tiny,
           "1SCM": preset_1scm, "2SCM": preset_2scm, "4SCM": preset_4scm}


def get_preset(name: str) -> CascadeConfig:
    if name not in PRESETS:
        raise KeyError(f"unknown preset '{name}' (choose from {', '.join(PRESETS)})")
    return PRESETS[name]()
