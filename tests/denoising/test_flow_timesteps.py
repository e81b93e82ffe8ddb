"""Rectified-flow training times: the densities against diffusers' draws from the same generator,
the shifts against ``FlowMatchEulerDiscreteScheduler``'s own schedules and a few hand values."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler
from diffusers.pipelines.flux.pipeline_flux import calculate_shift as flux_calculate_shift
from diffusers.training_utils import compute_density_for_timestep_sampling

from mmalign.errors import ConfigError
from mmalign.modalities.denoising import draw, flow_time

SD3 = dict(shift=3.0)
FLUX = dict(shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
            base_image_seq_len=256, max_image_seq_len=4096)
DENSITIES = [("uniform", {}), ("logit_normal", {}), ("logit_normal", dict(logit_mean=0.3, logit_std=1.7)),
             ("mode", {}), ("mode", dict(mode_scale=0.8))]


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def grid(n: int = 1000) -> np.ndarray:
    """The unshifted grid 1, ..., 1/n, built as the scheduler builds its training schedule."""
    return (np.linspace(1, n, n, dtype=np.float32)[::-1] / n).copy()


@pytest.mark.parametrize("scheme,density", DENSITIES)
def test_densities_draw_exactly_what_diffusers_draws_from_the_same_generator(scheme, density):
    """compute_density_for_timestep_sampling(scheme, batch_size=1, ...) and the sampler, each on a
    fresh generator of the same seed, give the same float32 value for every seed."""
    args = dict(logit_mean=0.0, logit_std=1.0, mode_scale=1.29) | density
    sample = flow_time.flow_sampler(scheme, **density)
    for seed in range(500):
        expected = compute_density_for_timestep_sampling(scheme, batch_size=1, generator=gen(seed), **args)[0]
        got = sample(gen(seed))
        assert got.shape == () and got.dtype == torch.float32
        assert got.item() == expected.item(), (scheme, seed)


def test_the_draw_consumes_the_generator_as_diffusers_does():
    """After one draw the generator sits where diffusers leaves it, so the row's noise that
    follows in draw.denoising_values is the same either way."""
    for scheme in flow_time.WEIGHTING_SCHEMES:
        mine, theirs = gen(11), gen(11)
        flow_time.flow_sampler(scheme)(mine)
        compute_density_for_timestep_sampling(scheme, 1, 0.0, 1.0, 1.29, generator=theirs)
        torch.testing.assert_close(torch.randn(4, generator=mine), torch.randn(4, generator=theirs), rtol=0, atol=0)


def test_mode_time_by_hand():
    """u = 1 - v - s (cos(pi v / 2)^2 - 1 + v): v = 0 -> 1, v = 1 -> 0 and v = 1/2 -> 1/2 for
    any s (cos(pi / 4)^2 = 1/2 cancels); s = 0 is 1 - v; v = 1/3, s = 1:
    1 - 1/3 - (cos(pi / 6)^2 - 2/3) = 2/3 - (3/4 - 2/3) = 7/12."""
    v = torch.tensor([0.0, 0.5, 1.0])
    for s in (0.0, 1.29, -0.5):
        torch.testing.assert_close(flow_time.mode_time(v, s), torch.tensor([1.0, 0.5, 0.0]))
    torch.testing.assert_close(flow_time.mode_time(torch.tensor([0.2, 0.7]), 0.0), torch.tensor([0.8, 0.3]))
    torch.testing.assert_close(flow_time.mode_time(torch.tensor(1 / 3), 1.0), torch.tensor(7 / 12))


def test_unknown_scheme_names_the_allowed_ones():
    for name in ("cosmap", "logit-normal", ""):
        with pytest.raises(ConfigError, match="'uniform', 'logit_normal', 'mode'"):
            flow_time.flow_sampler(name)
        with pytest.raises(ConfigError, match="weighting_scheme"):
            flow_time.flow_timestep_sampler(SD3, name)


def test_static_shift_is_sd3s_schedule():
    """For FlowMatchEulerDiscreteScheduler(shift=3.0) the shift of 1, ..., 1/1000 is the
    scheduler's training schedule and what set_timesteps makes of that grid; t = 1/2 -> 3/4."""
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0)
    shift = flow_time.scheduler_shift(scheduler.config)
    shifted = shift(torch.from_numpy(grid()))
    torch.testing.assert_close(shifted, scheduler.sigmas, rtol=0, atol=1e-6)
    scheduler.set_timesteps(num_inference_steps=1000, sigmas=grid())
    torch.testing.assert_close(shifted, scheduler.sigmas[:-1], rtol=0, atol=1e-6)
    torch.testing.assert_close(shift(torch.tensor(0.5)), torch.tensor(0.75))
    torch.testing.assert_close(shifted, draw.shift_timestep(torch.from_numpy(grid()), 3.0), rtol=0, atol=0)


def test_calculate_shift_is_fluxs():
    """mu is linear in the sequence length: 0.5 at 256, 1.15 at 4096, and at 1024
    0.5 + 0.65 * 768 / 3840 = 0.63; the same as the FLUX pipeline's everywhere."""
    cfg = (256, 4096, 0.5, 1.15)
    assert flow_time.calculate_shift(256, *cfg) == pytest.approx(0.5, abs=1e-12)
    assert flow_time.calculate_shift(4096, *cfg) == pytest.approx(1.15, abs=1e-12)
    assert flow_time.calculate_shift(1024, *cfg) == pytest.approx(0.63, abs=1e-12)
    for length in (64, 256, 1024, 2025, 4096, 8192):
        for other in (cfg, (128, 2048, 0.25, 1.5)):
            assert flow_time.calculate_shift(length, *other) == pytest.approx(
                flux_calculate_shift(length, *other), rel=0, abs=1e-12)


@pytest.mark.parametrize("image_seq_len", [1024, 4096])
@pytest.mark.parametrize("time_shift_type", ["exponential", "linear"])
def test_dynamic_shift_is_fluxs_schedule(image_seq_len, time_shift_type):
    """With use_dynamic_shifting the shift of a grid is what set_timesteps(sigmas=grid, mu=mu)
    makes of it, mu from calculate_shift of the config and the sequence length."""
    scheduler = FlowMatchEulerDiscreteScheduler(**FLUX, time_shift_type=time_shift_type)
    mu = flow_time.calculate_shift(image_seq_len, 256, 4096, 0.5, 1.15)
    for n in (28, 1000):
        scheduler.set_timesteps(num_inference_steps=n, sigmas=grid(n), mu=mu)
        shifted = flow_time.scheduler_shift(scheduler.config, image_seq_len)(torch.from_numpy(grid(n)))
        torch.testing.assert_close(shifted, scheduler.sigmas[:-1], rtol=0, atol=1e-6)


def test_exponential_shift_is_the_static_one_with_factor_exp_mu():
    """exp(mu) / (exp(mu) + 1 / t - 1) = e t / (e t + 1 - t) = e t / (1 + (e - 1) t), e = exp(mu);
    at t = 1/2 with mu = log 3: 3 / 4."""
    t = torch.linspace(0.01, 0.99, 50)
    for mu in (0.5, 0.63, 1.15):
        torch.testing.assert_close(flow_time.exponential_time_shift(t, mu), flow_time.static_shift(t, math.exp(mu)))
    torch.testing.assert_close(flow_time.exponential_time_shift(torch.tensor(0.5), math.log(3.0)), torch.tensor(0.75))
    torch.testing.assert_close(flow_time.linear_time_shift(torch.tensor(0.5), 3.0), torch.tensor(0.75))
    ends = flow_time.exponential_time_shift(torch.tensor([0.0, 1.0]), 1.15)
    torch.testing.assert_close(ends, torch.tensor([0.0, 1.0]))


def test_plain_dict_configs_and_defaults():
    """A dict works as the FrozenDict does; missing keys take the scheduler's defaults (shift 1:
    the identity; dynamic: 256 / 4096 / 0.5 / 1.15, exponential)."""
    t = torch.linspace(0.05, 0.95, 19)
    torch.testing.assert_close(flow_time.scheduler_shift({})(t), t)
    torch.testing.assert_close(flow_time.scheduler_shift(dict(SD3))(t), flow_time.static_shift(t, 3.0))
    frozen = FlowMatchEulerDiscreteScheduler(**FLUX).config
    torch.testing.assert_close(flow_time.scheduler_shift({"use_dynamic_shifting": True}, 1024)(t),
                               flow_time.scheduler_shift(frozen, 1024)(t))
    # a static config ignores the sequence length: SD3's shift is fixed
    torch.testing.assert_close(flow_time.scheduler_shift(SD3, 4096)(t), flow_time.scheduler_shift(SD3)(t))


def test_config_errors():
    with pytest.raises(ConfigError, match="image_seq_len"):
        flow_time.scheduler_shift(FLUX)
    with pytest.raises(ConfigError, match="image_seq_len"):
        flow_time.flow_timestep_sampler(FLUX, "logit_normal")
    with pytest.raises(ConfigError, match="time_shift_type"):
        flow_time.scheduler_shift(FLUX | {"time_shift_type": "cubic"}, 1024)
    with pytest.raises(ConfigError, match="shift_terminal"):
        flow_time.scheduler_shift(SD3 | {"shift_terminal": 0.1})
    with pytest.raises(ConfigError, match="invert_sigmas"):
        flow_time.scheduler_shift(SD3 | {"invert_sigmas": True})


@pytest.mark.parametrize("config,image_seq_len", [(SD3, None), (FLUX, 1024), (FLUX, 4096)])
@pytest.mark.parametrize("scheme,density", DENSITIES)
def test_flow_timestep_sampler_is_the_density_then_the_shift(config, image_seq_len, scheme, density):
    """Per seed: the sampler's value is the config's shift of the density's value, a scalar
    strictly inside (0, 1) over 300 seeds."""
    sample = flow_time.flow_timestep_sampler(config, scheme, image_seq_len, **density)
    shift = flow_time.scheduler_shift(config, image_seq_len)
    density_sample = flow_time.flow_sampler(scheme, **density)
    values = torch.stack([sample(gen(seed)) for seed in range(300)])
    expected = torch.stack([shift(density_sample(gen(seed))) for seed in range(300)])
    torch.testing.assert_close(values, expected, rtol=0, atol=0)
    assert values.shape == (300,) and bool(((values > 0) & (values < 1)).all())


def test_shift_moves_times_towards_noise():
    """Every shift here has factor > 1 (3, exp(0.63), exp(1.15)), so each time grows."""
    t = torch.linspace(0.01, 0.99, 99)
    for config, length in ((SD3, None), (FLUX, 1024), (FLUX, 4096)):
        assert bool((flow_time.scheduler_shift(config, length)(t) > t).all())
    # a longer sequence is shifted further
    assert bool((flow_time.scheduler_shift(FLUX, 4096)(t) > flow_time.scheduler_shift(FLUX, 1024)(t)).all())


def test_fits_the_per_row_draw():
    """As the timestep sampler of draw.denoising_values: a scalar first, then the noise, so the
    row's noise is the generator's draw after the one (1,)-sized draw of the time."""
    sample = flow_time.flow_timestep_sampler(FLUX, "logit_normal", 1024)
    values = draw.denoising_values(gen(3), (2, 3), sample)
    g = gen(3)
    torch.normal(0.0, 1.0, (1,), generator=g)
    assert values["timesteps"].shape == ()
    torch.testing.assert_close(values["noise"], torch.randn(2, 3, generator=g), rtol=0, atol=0)
    row = lambda g: draw.denoising_values(g, (4,), sample)  # noqa: E731
    batch = draw.per_row(["a", "b"], seed=1, epoch=0, salt="s", row=row)
    assert batch["timesteps"].shape == (2,) and batch["timesteps"].dtype == torch.float32
