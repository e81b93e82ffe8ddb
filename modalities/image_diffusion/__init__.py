"""Image diffusion (SD 1.5, SDXL): Diffusion-DPO and its family, on the denoising library.

Importing the package registers its dataset schemas (``image_diffusion:pickapic``,
``image_diffusion:image_pairs``, ``image_diffusion:image_labels``) and its evaluators
(``diffusion_win_rate``); the trainer finds :class:`ImageDiffusionModality` through the
``mmalign.modalities`` entry point, and the scorers through ``mmalign.rewards``.
"""
from mmalign.modalities.image_diffusion import evaluators, schemas  # noqa: F401  (they register)
from mmalign.modalities.image_diffusion.modality import ImageDiffusionModality

__all__ = ["ImageDiffusionModality"]
