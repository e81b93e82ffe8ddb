"""One transformer forward of SD3 / SD3.5 and FLUX on noisy latents, in training layout.

Each model takes its time in its own convention (what its pipeline passes the transformer):

=============  ======================  =====================================================
model          ``timestep`` argument   also
=============  ======================  =====================================================
SD3 / SD3.5    ``t * 1000``            ``pooled_projections`` (both CLIP projections)
FLUX.1         ``t``                   packed 2 x 2 latent patches, ``img_ids`` / ``txt_ids``;
                                       ``guidance`` only when ``config.guidance_embeds``
=============  ======================  =====================================================

Here ``t`` in [0, 1] is the flow time of ``x_t = (1 - t) x_0 + t e`` (the scheduler's sigma).
Both take and return ``[N, C, h, w]`` latents here; FLUX's packing is undone on the way out,
so the target and the per-sample mean are computed on the same grid for every model.
"""
from __future__ import annotations

import torch
from diffusers import FluxPipeline
from torch import Tensor, nn

#: the timestep scale of the SD3 transformer (its scheduler's num_train_timesteps)
SD3_TIME_SCALE = 1000


def sd3_prediction(model: nn.Module, x_t: Tensor, t: Tensor, embeds: Tensor, pooled: Tensor) -> Tensor:
    dtype = model.dtype
    return model(hidden_states=x_t.to(dtype), timestep=(t * SD3_TIME_SCALE).to(dtype),
                 encoder_hidden_states=embeds.to(dtype), pooled_projections=pooled.to(dtype),
                 return_dict=False)[0]


def flux_prediction(model: nn.Module, x_t: Tensor, t: Tensor, embeds: Tensor, pooled: Tensor,
                    guidance: float) -> Tensor:
    dtype, (n, c, h, w) = model.dtype, x_t.shape
    packed = FluxPipeline._pack_latents(x_t.to(dtype), n, c, h, w)
    img_ids = FluxPipeline._prepare_latent_image_ids(n, h // 2, w // 2, x_t.device, dtype)
    txt_ids = torch.zeros(embeds.shape[1], 3, device=x_t.device, dtype=dtype)
    scale = torch.full((n,), guidance, device=x_t.device, dtype=dtype) if model.config.guidance_embeds else None
    out = model(hidden_states=packed, timestep=t.to(dtype), guidance=scale, pooled_projections=pooled.to(dtype),
                encoder_hidden_states=embeds.to(dtype), txt_ids=txt_ids, img_ids=img_ids, return_dict=False)[0]
    # the pipeline's unpacking, on the latent grid itself (a scale factor of 1)
    return FluxPipeline._unpack_latents(out, h, w, 1)
