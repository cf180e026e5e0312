"""Echo phantom: apical 4-chamber videos with known EF, written in EchoNet-Dynamic's format.

Simulator v2 (default):
shape       - parametric 4-chamber shape model, regional LV wall motion, exact LV tracings and masks
ultrasound  - beam-domain image formation (scatterers, PSF, envelope, log compression, scan conversion)
Simulator v1:
anatomy     - heart geometry, cardiac cycle (shared with v2), inverse tissue map, LV tracings
render      - sector, speckle texture warped with the tissue, valves, display mapping
dataset     - per-video generation, per-frame LV masks/volumes, the parallel deterministic writer
"""
from echogen.data.phantom.anatomy import Heart, sample_ef, sample_heart, tracing
from echogen.data.phantom.dataset import (contraction, heart_v1, heart_v2, load_masks, lv_masks, lv_masks_v1,
                                     lv_volumes, lv_volumes_v1, make_video, write_phantom)
from echogen.data.phantom.render import Scene

__all__ = ["Heart", "Scene", "contraction", "heart_v1", "heart_v2", "load_masks", "lv_masks", "lv_masks_v1",
           "lv_volumes", "lv_volumes_v1", "make_video",
           "sample_ef", "sample_heart", "tracing", "write_phantom"]
