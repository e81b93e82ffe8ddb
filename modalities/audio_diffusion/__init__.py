"""Audio-generation DPO for ACE-Step (flow matching) and Tango 2's mel-UNet form
(``AudioDiffusionModality``), registered under ``audio_diffusion``."""
from mmalign.modalities.audio_diffusion.modality import AudioDiffusionModality

__all__ = ["AudioDiffusionModality"]
