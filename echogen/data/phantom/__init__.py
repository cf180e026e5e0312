"""Echo phantom: apical 4-chamber videos with known EF, written in EchoNet-Dynamic's format.

anatomy  - heart geometry, cardiac cycle, inverse tissue map, LV tracings
render   - sector, speckle texture warped with the tissue, valves, display mapping
dataset  - per-video generation and the parallel, deterministic dataset writer
"""
from echogen.data.phantom.anatomy import Heart, sample_ef, sample_heart, tracing
from echogen.data.phantom.dataset import make_video, write_phantom
from echogen.data.phantom.render import Scene

__all__ = ["Heart", "Scene", "make_video", "sample_ef", "sample_heart", "tracing", "write_phantom"]
