"""Flow-DPO for SD3 / SD3.5 and FLUX.1 (``ImageFlowModality``), registered under ``image_flow``."""
from mmalign.modalities.image_flow.modality import ImageFlowModality

__all__ = ["ImageFlowModality"]
