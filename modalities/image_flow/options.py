"""The recipe's ``model.options`` for the image-flow modality (SD3 / SD3.5, FLUX): the shared
text-to-image options and the flow-matching ones, validated by the core before the modality
is built (errors named ``model.options.<field>``)."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from mmalign.modalities.image_diffusion.options import ImageOptions

class FlowOptions(ImageOptions):
    """Options of :class:`~mmalign.modalities.image_flow.ImageFlowModality`: the shared
    :class:`~mmalign.modalities.image_diffusion.options.ImageOptions` and

    * ``weighting_scheme``: the density of training times before the scheduler's shift,
      ``logit_normal`` (SD3's default, with ``logit_mean`` 0 and ``logit_std`` 1), ``mode`` (with
      ``mode_scale``) or ``uniform`` (Esser et al. 2024, arXiv:2403.03206, sec. 3.1);
    * ``guidance``: the distilled guidance a FLUX.1-dev transformer (``guidance_embeds``) is
      trained at, 3.5 as in diffusers' FLUX training scripts; unused by other models;
    * ``max_sequence_length``: T5 tokens per caption (None: the pipeline's default, 256 for SD3
      and 512 for FLUX; the tiny models take 16).
    """

    resolution: int = Field(1024, gt=0, multiple_of=16)
    weighting_scheme: Literal["logit_normal", "mode", "uniform"] = "logit_normal"
    logit_mean: float = 0.0
    logit_std: float = Field(1.0, gt=0.0)
    mode_scale: float = 1.29
    guidance: float = Field(3.5, ge=0.0)
    max_sequence_length: int | None = Field(None, gt=0)
    sample_steps: int = Field(28, gt=0)
    guidance_scale: float = 7.0

def parse_options(options: dict[str, Any]) -> FlowOptions:
    """:class:`FlowOptions` of ``model.options``, with the core's error messages."""
    from mmalign.config import validate_options

    return FlowOptions(**validate_options(FlowOptions, options, "image_flow"))

def density(options: FlowOptions) -> dict[str, float]:
    """The time density's parameters, as ``flow_time.flow_sampler`` takes them."""
    return {"logit_mean": options.logit_mean, "logit_std": options.logit_std, "mode_scale": options.mode_scale}
