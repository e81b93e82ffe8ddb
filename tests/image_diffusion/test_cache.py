"""The frozen-work cache: same surrogates as the uncached path, and with it the VAE and the
text encoders never run during training steps."""
from __future__ import annotations

import os

import pytest
import torch

from diffusion_helpers import count_calls, make_modality


@pytest.mark.parametrize("builder", ["tiny_sd15", "tiny_sdxl"])
def test_cached_and_uncached_surrogates_agree(builder, pickapic_file, tmp_path):
    options = dict(caption_dropout=0.5, random_flip=True)
    cached, policy = make_modality(builder, cache=True, **options)
    plain, _ = make_modality(builder, cache=False, **options)
    records = cached.load_records(pickapic_file, "pickapic")
    prepared = cached.prepare(records, str(tmp_path / "cache"))
    assert plain.prepare(records, str(tmp_path / "unused")) == records
    flips, drops = [], []
    for epoch in range(3):  # several epochs: different flips and dropouts, same agreement
        batch_c, batch_p = cached.collate(prepared), plain.collate(records)
        batch_c.epoch = batch_p.epoch = epoch
        assert batch_c.inputs["cached"] and not batch_p.inputs["cached"]
        draw_c, draw_p = cached.draw(batch_c, 5, policy), plain.draw(batch_p, 5, policy)
        flips += draw_c["flip"].tolist()
        drops += draw_c["drop"].tolist()
        with torch.no_grad():
            sc = cached.surrogate(policy, batch_c, draw_c, frozenset())
            sp = plain.surrogate(policy, batch_p, draw_p, frozenset())
        # same images, crops and prompts through the same frozen models: float32 agreement
        torch.testing.assert_close(sc.chosen, sp.chosen, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(sc.rejected, sp.rejected, rtol=1e-5, atol=1e-6)
    # both flips and both dropout outcomes were exercised
    assert set(flips) == {True, False} and set(drops) == {True, False}


@pytest.mark.parametrize("builder", ["tiny_sd15", "tiny_sdxl"])
def test_cache_on_never_runs_frozen_encoders(builder, pickapic_file, tmp_path):
    modality, policy = make_modality(builder, cache=True, caption_dropout=0.5, random_flip=True)
    records = modality.load_records(pickapic_file, "pickapic")
    calls = count_calls(modality)
    prepared = modality.prepare(records, str(tmp_path / "cache"))
    assert calls["vae_encoder"] == 1 and calls["text_encoder"] >= 1  # prepare encodes (one chunk)
    for name in calls:
        calls[name] = 0
    for epoch in range(2):
        batch = modality.collate(prepared)
        batch.epoch = epoch
        draw = modality.draw(batch, 0, policy)
        loss = -modality.surrogate(policy, batch, draw, frozenset()).chosen.mean()
        loss.backward()
    # a second prepare finds every record cached and encodes nothing
    assert modality.prepare(records, str(tmp_path / "cache")) == prepared
    assert calls == dict.fromkeys(calls, 0)


def test_cache_key_follows_preprocessing(pickapic_file, tmp_path):
    a, _ = make_modality(resolution=32)
    b, _ = make_modality(resolution=48)
    records = a.load_records(pickapic_file, "pickapic")
    folder_a = a.prepare(records, str(tmp_path))[0]["cache_file"].rsplit("/", 2)[-2]
    folder_b = b.prepare(records, str(tmp_path))[0]["cache_file"].rsplit("/", 2)[-2]
    assert folder_a != folder_b


def test_cache_stores_distribution_and_both_flips(pickapic_file, tmp_path):
    from safetensors.torch import load_file

    modality, _ = make_modality("tiny_sdxl", random_flip=True)
    prepared = modality.prepare(modality.load_records(pickapic_file, "pickapic"), str(tmp_path))
    stored = load_file(prepared[0]["cache_file"])
    assert stored["mean"].shape == stored["logvar"].shape == (2, 2, 4, 16, 16)  # [sides, flips, C, h, w]
    # the flipped image's latent mean is not the unflipped one's
    assert not torch.allclose(stored["mean"][0, 0], stored["mean"][0, 1])
    # 40x36 images: short side 36 -> 32, so 40 -> 36 (rounded 35.6); center crop top 0, left 2
    torch.testing.assert_close(stored["time_ids"], torch.tensor([36.0, 40.0, 0.0, 2.0, 32.0, 32.0]))


def test_bfloat16_cache_halves_the_disk_and_keeps_the_surrogates(pickapic_file, tmp_path):
    """``cache_dtype: bfloat16`` stores the latents and embeddings in half the bytes; they are
    read back as float32 (rounded to bfloat16's 8 significant bits, a relative 2^-9), and the
    surrogates move by that rounding only (measured 6e-6 relative; 1e-4 allowed), where
    another epoch's draw moves them by far more."""
    from safetensors.torch import load_file

    wide, policy = make_modality(cache=True)
    narrow, _ = make_modality(cache=True, cache_dtype="bfloat16")
    records = wide.load_records(pickapic_file, "pickapic")
    big, small = wide.prepare(records, str(tmp_path)), narrow.prepare(records, str(tmp_path))
    assert big[0]["cache_file"] != small[0]["cache_file"]
    assert load_file(small[0]["cache_file"])["mean"].dtype == torch.bfloat16
    size = lambda recs: sum(os.path.getsize(r["cache_file"]) for r in recs)  # noqa: E731
    assert size(small) < 0.6 * size(big)
    batch_w, batch_n = wide.collate(big), narrow.collate(small)
    assert batch_n.inputs["mean"].dtype == torch.float32
    rounded = batch_w.inputs["mean"].to(torch.bfloat16).float()
    torch.testing.assert_close(batch_n.inputs["mean"], rounded, rtol=0, atol=0)
    with torch.no_grad():
        a = wide.surrogate(policy, batch_w, wide.draw(batch_w, 0, policy), frozenset())
        b = narrow.surrogate(policy, batch_n, narrow.draw(batch_n, 0, policy), frozenset())
        batch_w.epoch = 1
        other = wide.surrogate(policy, batch_w, wide.draw(batch_w, 0, policy), frozenset())
    torch.testing.assert_close(b.chosen, a.chosen, rtol=1e-4, atol=0)
    assert (other.chosen - a.chosen).abs().max() > 10 * (b.chosen - a.chosen).abs().max()
