"""The denoising family's shared library: what image, video and audio diffusion plugins share.

Not a modality (nothing here registers): plugins import these small modules.

* :mod:`.draw`: per-row draws of the timestep, the noise and the latent sample; timestep
  samplers (uniform, logit-normal, shifted);
* :mod:`.flow_time`: rectified-flow training times (Esser et al. 2024, SD3, arXiv:2403.03206):
  densities of ``u`` (uniform, logit-normal, mode) drawn as diffusers draws them, and the shift a
  ``FlowMatchEulerDiscreteScheduler`` config prescribes (static, or FLUX's resolution-dependent one);
* :mod:`.targets`: the noisy input and the regression target of each prediction type
  (epsilon, v, sample, rectified-flow velocity);
* :mod:`.surrogate`: the per-sample surrogate ``-0.5 * mean((prediction - target)**2)``
  (Wallace et al. 2023, Diffusion-DPO, arXiv:2311.12908), pairs and KTO's mismatched term;
* :mod:`.pairs`: the noisy inputs, targets and times of pairs, side-major (flow and DDPM);
* :mod:`.export`: LoRA export in diffusers format.

The frozen-work cache every family uses is :mod:`mmalign.modalities.frozen_cache`. Nothing
here knows a network class: the plugin runs its own network (UNet, transformer) and gives
this library tensors.
"""
