"""Noisy inputs and regression targets of the denoising library, against values worked out by
hand on a two-step schedule chosen so every square root is exact.

The schedule: ``DDPMScheduler(trained_betas=[0.36, 0.4375])``, so ``a_0 = 1 - 0.36 = 0.64`` and
``a_1 = 0.64 * (1 - 0.4375) = 0.64 * 0.5625 = 0.36`` (cumulative products). Then
``alpha_t = sqrt(a_t)`` and ``sigma_t = sqrt(1 - a_t)`` are ``(0.8, 0.6)`` at ``t = 0`` and
``(0.6, 0.8)`` at ``t = 1``. Every case uses ``x0 = [1, -1]`` and ``noise = [2, 0.5]``.
"""
from __future__ import annotations

import pytest
import torch
from diffusers import DDPMScheduler, FlowMatchEulerDiscreteScheduler

from mmalign.errors import ConfigError
from mmalign.modalities.denoising import targets
from mmalign.modalities.denoising.draw import shift_timestep

X0 = torch.tensor([[1.0, -1.0], [1.0, -1.0]])  # two rows, the same sample, t = 0 and t = 1
NOISE = torch.tensor([[2.0, 0.5], [2.0, 0.5]])
T = torch.tensor([0, 1])


def scheduler(prediction_type: str = "epsilon") -> DDPMScheduler:
    return DDPMScheduler(num_train_timesteps=2, trained_betas=[0.36, 0.4375], prediction_type=prediction_type)


def test_the_schedule_is_the_one_worked_out():
    torch.testing.assert_close(scheduler().alphas_cumprod, torch.tensor([0.64, 0.36]))


def test_noisy_input_is_alpha_x0_plus_sigma_noise():
    # t = 0: 0.8 * [1, -1] + 0.6 * [2, 0.5] = [0.8 + 1.2, -0.8 + 0.3] = [2.0, -0.5]
    # t = 1: 0.6 * [1, -1] + 0.8 * [2, 0.5] = [0.6 + 1.6, -0.6 + 0.4] = [2.2, -0.2]
    expected = torch.tensor([[2.0, -0.5], [2.2, -0.2]])
    torch.testing.assert_close(targets.noisy_input(scheduler(), X0, NOISE, T), expected)


def test_v_target_is_alpha_noise_minus_sigma_x0():
    # t = 0: 0.8 * [2, 0.5] - 0.6 * [1, -1] = [1.6 - 0.6, 0.4 + 0.6] = [1.0, 1.0]
    # t = 1: 0.6 * [2, 0.5] - 0.8 * [1, -1] = [1.2 - 0.8, 0.3 + 0.8] = [0.4, 1.1]
    expected = torch.tensor([[1.0, 1.0], [0.4, 1.1]])
    torch.testing.assert_close(targets.target(scheduler("v_prediction"), X0, NOISE, T), expected)


def test_epsilon_and_sample_targets():
    torch.testing.assert_close(targets.target(scheduler("epsilon"), X0, NOISE, T), NOISE, rtol=0, atol=0)
    torch.testing.assert_close(targets.target(scheduler("sample"), X0, NOISE, T), X0, rtol=0, atol=0)
    with pytest.raises(ConfigError, match="prediction_type 'flow' is not one of epsilon, v_prediction, sample"):
        targets.target(scheduler("flow"), X0, NOISE, T)


def test_noisy_pairs_share_the_rows_noise_and_timestep():
    """``latents [B, S, ...]``: both samples of a row get its noise and t. Row 0 (t = 0) holds
    x0 and 2 * x0: 0.8 * 2 * [1, -1] + 0.6 * [2, 0.5] = [1.6 + 1.2, -1.6 + 0.3] = [2.8, -1.3]."""
    latents = torch.stack([X0, 2 * X0], dim=1)  # [2, 2, 2]
    noise, x_t = targets.noisy_pairs(scheduler(), latents, NOISE, T)
    assert noise.shape == x_t.shape == (2, 2, 2)
    torch.testing.assert_close(noise[:, 1], NOISE, rtol=0, atol=0)
    torch.testing.assert_close(x_t[0], torch.tensor([[2.0, -0.5], [2.8, -1.3]]))
    torch.testing.assert_close(x_t[1, 0], torch.tensor([2.2, -0.2]))


def test_rectified_flow_input_and_velocity():
    """Esser et al. 2024: ``x_t = (1 - t) x0 + t e``, target ``e - x0``. At ``t = 0.25``:
    0.75 * [1, -1] + 0.25 * [2, 0.5] = [0.75 + 0.5, -0.75 + 0.125] = [1.25, -0.625];
    velocity [2 - 1, 0.5 + 1] = [1, 1.5], which is d x_t / d t; t = 0 gives x0, t = 1 the noise."""
    x0, noise = X0[:1], NOISE[:1]
    torch.testing.assert_close(targets.flow_noisy_input(x0, noise, torch.tensor([0.25])),
                               torch.tensor([[1.25, -0.625]]))
    torch.testing.assert_close(targets.flow_velocity(x0, noise), torch.tensor([[1.0, 1.5]]))
    torch.testing.assert_close(targets.flow_noisy_input(x0, noise, torch.tensor([0.0])), x0)
    torch.testing.assert_close(targets.flow_noisy_input(x0, noise, torch.tensor([1.0])), noise)
    # per row: a [B, C, F, H, W] video latent with one t per row
    video_x0, video_noise = torch.ones(2, 1, 2, 1, 1), torch.zeros(2, 1, 2, 1, 1)
    x_t = targets.flow_noisy_input(video_x0, video_noise, torch.tensor([0.25, 0.5]))
    torch.testing.assert_close(x_t.flatten(1), torch.tensor([[0.75, 0.75], [0.5, 0.5]]))


def test_flow_input_is_what_the_flow_matching_scheduler_computes():
    """diffusers' ``FlowMatchEulerDiscreteScheduler`` over 4 steps has sigmas 1, 0.75, 0.5, 0.25
    at timesteps 4, 3, 2, 1; its ``scale_noise`` at timestep 1 is our input at t = 0.25, and its
    shifted sigmas (shift 3) are :func:`shift_timestep` of the unshifted ones."""
    flow = FlowMatchEulerDiscreteScheduler(num_train_timesteps=4, shift=1.0)
    ours = targets.flow_noisy_input(X0[:1], NOISE[:1], torch.tensor([0.25]))
    torch.testing.assert_close(flow.scale_noise(X0[:1], torch.tensor([1.0]), NOISE[:1]), ours)
    shifted = FlowMatchEulerDiscreteScheduler(num_train_timesteps=4, shift=3.0)
    torch.testing.assert_close(shifted.sigmas[:-1], shift_timestep(flow.sigmas[:-1], 3.0))
