"""Per-row draws and timestep samplers of the denoising library, by their formulas."""
from __future__ import annotations

import math

import torch

from mmalign.modality import row_generator
from mmalign.modalities.denoising import draw


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_row_values_come_in_a_fixed_order_from_the_rows_generator():
    """t first, then the noise, then the latent sample's eps: the same draws a fresh generator
    of the same seed gives in that order."""
    values = draw.denoising_values(gen(3), (2, 3), draw.uniform_timestep(1000))
    g = gen(3)
    expected = {"timesteps": torch.randint(0, 1000, (), generator=g), "noise": torch.randn(2, 3, generator=g),
                "latent_eps": torch.randn(2, 3, generator=g)}
    for key, value in expected.items():
        torch.testing.assert_close(values[key], value, rtol=0, atol=0)


def test_per_row_draws_depend_on_the_row_not_the_batch():
    row = lambda g: draw.denoising_values(g, (4,), draw.uniform_timestep(10))  # noqa: E731
    both = draw.per_row(["a", "b"], seed=1, epoch=2, salt="s", row=row)
    alone = draw.per_row(["b"], seed=1, epoch=2, salt="s", row=row)
    assert both["noise"].shape == (2, 4) and both["timesteps"].shape == (2,)
    torch.testing.assert_close(both["noise"][1], alone["noise"][0], rtol=0, atol=0)
    torch.testing.assert_close(alone["noise"][0], row(row_generator(1, "b", 2, "s"))["noise"], rtol=0, atol=0)


def test_uniform_timesteps_cover_the_schedule():
    sample = draw.uniform_timestep(4)
    g = gen()
    seen = torch.stack([sample(g) for _ in range(400)])
    assert seen.dtype == torch.int64 and set(seen.tolist()) == {0, 1, 2, 3}


def test_logit_normal_is_the_sigmoid_of_a_normal_draw():
    """t = sigmoid(m + s n) with n the generator's normal draw; so its CDF is
    P(t <= x) = Phi((logit(x) - m) / s): the median is sigmoid(m) and
    P(t <= sigmoid(m + s)) = Phi(1) = 0.8413 (checked on 20000 draws, standard error 0.0026)."""
    m, s = 0.5, 1.2
    sample = draw.logit_normal_timestep(m, s)
    n = torch.randn((), generator=gen(7))
    torch.testing.assert_close(sample(gen(7)), torch.sigmoid(m + s * n))
    g = gen(1)
    t = torch.stack([sample(g) for _ in range(20000)])
    assert bool(((t > 0) & (t < 1)).all())
    assert abs((t <= torch.sigmoid(torch.tensor(m))).float().mean().item() - 0.5) < 0.01
    assert abs((t <= torch.sigmoid(torch.tensor(m + s))).float().mean().item() - 0.8413) < 0.01


def test_shift_moves_times_towards_noise_and_keeps_the_ends():
    """shift * t / (1 + (shift - 1) * t) with shift 3: t = 0.5 -> 1.5 / 2 = 0.75,
    t = 0.25 -> 0.75 / 1.5 = 0.5; 0 and 1 stay; shift 1 is the identity."""
    t = torch.tensor([0.0, 0.25, 0.5, 1.0])
    torch.testing.assert_close(draw.shift_timestep(t, 3.0), torch.tensor([0.0, 0.5, 0.75, 1.0]))
    torch.testing.assert_close(draw.shift_timestep(t, 1.0), t)
    shifted = draw.shifted(draw.logit_normal_timestep(), 3.0)
    plain = draw.logit_normal_timestep()(gen(5))
    torch.testing.assert_close(shifted(gen(5)), 3 * plain / (1 + 2 * plain))


def test_posterior_sample_is_mean_plus_std_times_eps():
    """mean 1, logvar log 4 (std 2), eps 0.5 -> 1 + 2 * 0.5 = 2; eps 0 gives the mean."""
    mean, logvar = torch.tensor([1.0, -3.0]), torch.tensor([math.log(4.0), 0.0])
    torch.testing.assert_close(draw.posterior_sample(mean, logvar, torch.tensor([0.5, 0.0])),
                               torch.tensor([2.0, -3.0]))
