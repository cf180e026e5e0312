"""EchoGen: one echocardiogram frame + an ejection fraction -> a beating echo video loop.

Implements Reynaud et al., "Feature-Conditioned Cascaded Video Diffusion Models for Precise
Echocardiogram Synthesis" (MICCAI 2023).
"""
__version__ = "0.1.0"
