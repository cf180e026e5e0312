"""Network classes a stage can use, by name (StageConfig.network).

"spacetime" is EchoGen's own UNet (echogen/nets/unet.py, configured by StageConfig.unet). Other
networks (e.g. one matching published checkpoints) register a builder here: builder(stage) -> nn.Module
with the same forward signature as SpaceTimeUNet."""
from __future__ import annotations

from torch import nn

NETWORKS: dict = {}


def register(name: str):
    def deco(fn):
        NETWORKS[name] = fn
        return fn
    return deco


@register("spacetime")
def _spacetime(stage) -> nn.Module:
    from echogen.nets.unet import SpaceTimeUNet
    return SpaceTimeUNet(stage.unet)


def build_network(stage) -> nn.Module:
    if stage.network not in NETWORKS:
        import importlib
        try:  # optional network modules register themselves on import
            importlib.import_module(f"echogen.nets.{stage.network}")
        except ModuleNotFoundError:
            pass
    if stage.network not in NETWORKS:
        raise ValueError(f"stage '{stage.name}': unknown network '{stage.network}' (known: {sorted(NETWORKS)})")
    return NETWORKS[stage.network](stage)
