"""Diffusion-DPO for text-to-video transformers, Wan 2.1 and CogVideoX
(``VideoDiffusionModality``), registered under ``video_diffusion``."""
from mmalign.modalities.video_diffusion.modality import VideoDiffusionModality

__all__ = ["VideoDiffusionModality"]
