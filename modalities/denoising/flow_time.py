"""Rectified-flow training times: a density over ``u`` in (0, 1), then the model's shift.

Esser et al. 2024 ("Scaling Rectified Flow Transformers for High-Resolution Image Synthesis",
SD3, arXiv:2403.03206) train a flow model on times drawn from a density that favours the middle
of the path (sec. 3.1: logit-normal, mode sampling) and shift them towards noise at high
resolution (sec. 5.3.2). Which shift a model uses is written in its
``FlowMatchEulerDiscreteScheduler`` config: a fixed ``shift`` (SD3, SD3.5: 3.0) or, with
``use_dynamic_shifting``, an exponent ``mu`` linear in the packed latent sequence length
(FLUX), as diffusers' FLUX pipeline computes it.

Every sampler here is a :data:`~.draw.TimestepSampler` (a function of the row's generator), so
it slots into :func:`.draw.denoising_values`. The densities draw from the generator exactly as
diffusers' ``compute_density_for_timestep_sampling(..., batch_size=1)`` does, so a seeded row
gets the very value the diffusers training scripts would draw from that generator.

The diffusers training scripts index the scheduler's discrete schedule with ``u``; here the
shift is applied to ``u`` itself, a continuous time that agrees with the scheduler's schedule at
its grid points.
"""
from __future__ import annotations

import math
from typing import Callable, Mapping

import torch
from torch import Tensor

from mmalign.errors import ConfigError

from .draw import TimestepSampler

#: ``shift(u) -> t``: an unshifted flow time to the shifted one, elementwise
TimeShift = Callable[[Tensor], Tensor]

WEIGHTING_SCHEMES = ("uniform", "logit_normal", "mode")
TIME_SHIFT_TYPES = ("exponential", "linear")


# --- densities of the unshifted time u ---------------------------------------------------------

def flow_uniform_timestep() -> TimestepSampler:
    """``u ~ U(0, 1)``: the plain rectified-flow density (Esser et al. 2024, sec. 3.1).

    One ``torch.rand`` of size ``(1,)``, as diffusers draws it, so a seeded generator gives the
    same value as ``compute_density_for_timestep_sampling("uniform", 1, generator=gen)``."""
    return lambda gen: torch.rand((1,), generator=gen)[0]


def flow_logit_normal_timestep(logit_mean: float = 0.0, logit_std: float = 1.0) -> TimestepSampler:
    """``u = sigmoid(n)``, ``n ~ N(logit_mean, logit_std^2)``: the logit-normal density of
    Esser et al. 2024, sec. 3.1 (their best setting is mean 0, std 1).

    Unlike :func:`.draw.logit_normal_timestep` (``mean + std * randn``, kept as it is for the
    values it has already given), this draws ``torch.normal(mean, std)`` directly: the
    generator's normal draw is scaled in double precision there, so only this form equals
    diffusers' ``compute_density_for_timestep_sampling("logit_normal", 1, ...)`` bit for bit."""
    return lambda gen: torch.sigmoid(
        torch.normal(mean=logit_mean, std=logit_std, size=(1,), generator=gen))[0]


def mode_time(v: Tensor, mode_scale: float) -> Tensor:
    """``u = 1 - v - s * (cos(pi v / 2)^2 - 1 + v)``: the inverse CDF of the mode density of
    Esser et al. 2024, sec. 3.1 (eq. for ``f_mode``), at ``v`` in [0, 1]. ``s = 0`` is uniform;
    ``s > 0`` puts more weight on the middle of the path. It maps [0, 1] onto [0, 1]
    monotonically only for ``-1 <= s <= 2 / (pi - 2)`` (about 1.75)."""
    return 1 - v - mode_scale * (torch.cos(math.pi * v / 2) ** 2 - 1 + v)


def flow_mode_timestep(mode_scale: float = 1.29) -> TimestepSampler:
    """Mode sampling (Esser et al. 2024, sec. 3.1): :func:`mode_time` of ``v ~ U(0, 1)``.

    ``v`` is one ``torch.rand`` of size ``(1,)``, as diffusers' ``compute_density_for_timestep_
    sampling("mode", 1, mode_scale=...)`` draws it; 1.29 is the scale the SD3 paper reports."""
    return lambda gen: mode_time(torch.rand((1,), generator=gen), mode_scale)[0]


def flow_sampler(weighting_scheme: str, logit_mean: float = 0.0, logit_std: float = 1.0,
                 mode_scale: float = 1.29) -> TimestepSampler:
    """The density of the unshifted time named by ``weighting_scheme``: ``"uniform"``,
    ``"logit_normal"`` (``logit_mean``, ``logit_std``) or ``"mode"`` (``mode_scale``)
    (Esser et al. 2024, sec. 3.1).

    The loss weightings diffusers' scripts also accept under this name (``"sigma_sqrt"``,
    ``"cosmap"``, ``"none"``) are refused: they weight the loss rather than choose a density,
    and taking them as uniform would silently drop that weighting."""
    if weighting_scheme == "uniform":
        return flow_uniform_timestep()
    if weighting_scheme == "logit_normal":
        return flow_logit_normal_timestep(logit_mean, logit_std)
    if weighting_scheme == "mode":
        return flow_mode_timestep(mode_scale)
    raise ConfigError(f"flow timestep weighting_scheme {weighting_scheme!r} is not one of "
                      f"{', '.join(repr(s) for s in WEIGHTING_SCHEMES)}")


# --- shifts --------------------------------------------------------------------------------------

def static_shift(t: Tensor, shift: float) -> Tensor:
    """``shift * t / (1 + (shift - 1) * t)``: the fixed shift of Esser et al. 2024, sec. 5.3.2
    (SD3 and SD3.5 use 3.0); the same formula as :func:`.draw.shift_timestep`."""
    return shift * t / (1 + (shift - 1) * t)


def calculate_shift(image_seq_len: int, base_image_seq_len: int = 256, max_image_seq_len: int = 4096,
                    base_shift: float = 0.5, max_shift: float = 1.15) -> float:
    """The exponent ``mu`` of the resolution-dependent shift, as diffusers' FLUX pipeline
    computes it: the line through ``(base_image_seq_len, base_shift)`` and
    ``(max_image_seq_len, max_shift)`` at ``image_seq_len``, the length of the packed latent
    sequence (``(H / 16) * (W / 16)`` for FLUX's 2x2-packed latents of an ``H x W`` image).
    It extends the resolution shift of Esser et al. 2024, sec. 5.3.2, beyond the two ends."""
    slope = (max_shift - base_shift) / (max_image_seq_len - base_image_seq_len)
    intercept = base_shift - slope * base_image_seq_len
    return image_seq_len * slope + intercept


def exponential_time_shift(t: Tensor, mu: float, sigma: float = 1.0) -> Tensor:
    """``exp(mu) / (exp(mu) + (1 / t - 1) ** sigma)``: at ``sigma = 1`` this is
    :func:`static_shift` with ``shift = exp(mu)`` (Esser et al. 2024, sec. 5.3.2), the form
    ``FlowMatchEulerDiscreteScheduler`` applies with ``use_dynamic_shifting`` (FLUX).
    ``t = 0`` maps to 0 (``1 / 0`` is infinite) and ``t = 1`` to 1."""
    e = math.exp(mu)
    return e / (e + (1 / t - 1) ** sigma)


def linear_time_shift(t: Tensor, mu: float, sigma: float = 1.0) -> Tensor:
    """``mu / (mu + (1 / t - 1) ** sigma)``: the shift with ``mu`` itself as the factor, what the
    scheduler applies when its config has ``time_shift_type="linear"``."""
    return mu / (mu + (1 / t - 1) ** sigma)


def scheduler_shift(scheduler_config: Mapping, image_seq_len: int | None = None) -> TimeShift:
    """The shift a ``FlowMatchEulerDiscreteScheduler`` config (its ``.config``, a FrozenDict, or
    a plain dict) prescribes, as a function of the unshifted time (Esser et al. 2024, sec. 5.3.2):

    * ``use_dynamic_shifting`` false: :func:`static_shift` by ``shift`` (SD3, SD3.5);
      ``image_seq_len`` is not used;
    * ``use_dynamic_shifting`` true (FLUX): ``mu = calculate_shift(image_seq_len, ...)`` from the
      config's ``base_image_seq_len``, ``max_image_seq_len``, ``base_shift``, ``max_shift``, then
      :func:`exponential_time_shift` or :func:`linear_time_shift` per ``time_shift_type``;
      ``image_seq_len`` is required.

    Missing keys take the scheduler's defaults. ``shift_terminal`` (a stretch that depends on
    the last step of an inference schedule) and ``invert_sigmas`` have no pointwise meaning for
    a training time and are refused; the step-spacing flags (``use_karras_sigmas`` and kin)
    only place inference steps and do not enter here."""
    cfg = dict(scheduler_config)
    if cfg.get("shift_terminal"):
        raise ConfigError("scheduler config sets shift_terminal, which stretches a whole inference "
                          "schedule and has no per-time shift; train without it")
    if cfg.get("invert_sigmas"):
        raise ConfigError("scheduler config sets invert_sigmas; flow timestep draws expect sigma = 1 "
                          "to be pure noise")
    if not cfg.get("use_dynamic_shifting", False):
        shift = float(cfg.get("shift", 1.0))
        return lambda t: static_shift(t, shift)
    if image_seq_len is None:
        raise ConfigError("scheduler config has use_dynamic_shifting=True: the shift depends on the "
                          "image size, so pass image_seq_len (the packed latent sequence length)")
    kind = cfg.get("time_shift_type", "exponential")
    if kind not in TIME_SHIFT_TYPES:
        raise ConfigError(f"scheduler config time_shift_type {kind!r} is not one of "
                          f"{', '.join(repr(k) for k in TIME_SHIFT_TYPES)}")
    mu = calculate_shift(image_seq_len, cfg.get("base_image_seq_len", 256), cfg.get("max_image_seq_len", 4096),
                         cfg.get("base_shift", 0.5), cfg.get("max_shift", 1.15))
    time_shift = exponential_time_shift if kind == "exponential" else linear_time_shift
    return lambda t: time_shift(t, mu)


def flow_timestep_sampler(scheduler_config: Mapping, weighting_scheme: str, image_seq_len: int | None = None,
                          **density) -> TimestepSampler:
    """A row's flow time: :func:`flow_sampler` ``(weighting_scheme, **density)`` (``logit_mean``,
    ``logit_std``, ``mode_scale``) followed by :func:`scheduler_shift` of the model's scheduler
    config (Esser et al. 2024, secs. 3.1 and 5.3.2; FLUX's resolution-dependent shift when the
    config has ``use_dynamic_shifting``)."""
    sample = flow_sampler(weighting_scheme, **density)
    shift = scheduler_shift(scheduler_config, image_seq_len)
    return lambda gen: shift(sample(gen))
