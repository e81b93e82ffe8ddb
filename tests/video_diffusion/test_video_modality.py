"""The video-diffusion modality on a tiny Wan and a tiny CogVideoX: the causal VAE's frame map
and each transformer's declared layout, the frozen-work cache against live encoding, the
per-row draws, LoRA training with an export that a plain ``WanPipeline`` /
``CogVideoXPipeline`` loads with ``load_lora_weights``, loading a local pipeline folder, and the
conformance kit."""
from __future__ import annotations

import pytest
import torch

from mmalign.errors import ConfigError
from mmalign.modality import ModelSpec, row_generator
from mmalign.models import video_diffusion as vd
from mmalign.testing import check_modality, lora_dpo_steps

from mmalign.modalities.denoising.flow_time import flow_timestep_sampler
from mmalign.modalities.video_diffusion import VideoDiffusionModality
from mmalign.modalities.video_diffusion.layout import from_model, to_model

from video_helpers import KINDS, TINY, make_modality, transformer_output


@pytest.mark.parametrize("kind", ["wan", "cogvideox"])
def test_the_causal_vae_maps_4k_plus_1_frames_to_k_plus_1(kind):
    parts = getattr(vd, f"tiny_{kind}_parts")()
    for k in range(3):
        pixels = torch.zeros(1, 3, 4 * k + 1, 32, 32)
        with torch.no_grad():
            mean = parts.vae.encode(pixels).latent_dist.mean
        assert mean.shape == (1, 4, k + 1, 4, 4)
        assert vd.latent_frames(4 * k + 1, parts.temporal_factor) == k + 1
    with pytest.raises(ConfigError, match=r"8 frames do not fit a causal video VAE .* give 4k \+ 1 frames "
                                          r"\(e.g. 5 or 9\)"):
        vd.latent_frames(8, parts.temporal_factor)


def test_each_transformer_declares_its_layout_once():
    assert {k: s.layout for k, s in vd.KINDS.items()} == {"wan": "BCTHW", "cogvideox": "BTCHW"}
    x = torch.arange(2 * 4 * 3 * 5 * 6).reshape(2, 4, 3, 5, 6)  # [N, C, T, H, W]
    assert to_model(x, "BTCHW").shape == (2, 3, 4, 5, 6) and torch.equal(to_model(x, "BCTHW"), x)
    assert torch.equal(from_model(to_model(x, "BTCHW"), "BTCHW"), x)
    assert torch.equal(to_model(x, "BTCHW")[1, 2, 3], x[1, 3, 2])
    with pytest.raises(ValueError, match="unknown latent layout 'BHWTC'"):
        to_model(x, "BHWTC")


@pytest.mark.parametrize("case", ["wan", "cogvideox"])
def test_cached_and_live_conditioning_give_the_same_surrogate(case, pairs_file, tmp_path):
    modality, policy = make_modality(case, caption_dropout=0.5)
    records = modality.load_records(pairs_file)
    cached = modality.prepare(records, str(tmp_path / "cache"))
    live, stored = modality.collate(records), modality.collate(cached)
    assert stored.inputs["cached"] and not live.inputs["cached"]
    assert stored.inputs["mean"].shape == (4, 2, 4, 3, 4, 4)  # [B, S, C, T', H', W']
    draw = modality.draw(live, 3, policy)
    assert bool(draw["drop"].any()) and not bool(draw["drop"].all())  # the empty prompt is exercised too
    with torch.no_grad():
        a = modality.surrogate(policy, live, draw, frozenset())
        b = modality.surrogate(policy, stored, draw, frozenset())
    torch.testing.assert_close(a.chosen, b.chosen, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(a.rejected, b.rejected, rtol=1e-5, atol=1e-6)
    again = modality.prepare(records, str(tmp_path / "cache"))  # found again: nothing re-encoded
    assert [r["cache_file"] for r in again] == [r["cache_file"] for r in cached]


@pytest.mark.parametrize("case", ["wan", "cogvideox"])
def test_each_row_draws_its_time_from_its_own_generator(case, pairs_file):
    """Wan: flow times from the options' density with its scheduler's shift (3.0); CogVideoX:
    integer timesteps uniform over its 1000 training steps."""
    modality, policy = make_modality(case, weighting_scheme="logit_normal", cache=False)
    batch = modality.collate(modality.load_records(pairs_file))
    draw = modality.draw(batch, 5, policy)
    assert draw["noise"].shape == draw["latent_eps"].shape == (4, 4, 3, 4, 4)
    if case == "wan":
        sampler = flow_timestep_sampler({"shift": 3.0}, "logit_normal")
        expected = torch.stack([sampler(row_generator(5, sid, batch.epoch, "video_diffusion"))
                                for sid in batch.sample_id])
        torch.testing.assert_close(draw["timesteps"], expected, rtol=0, atol=0)
    else:
        t = draw["timesteps"]
        assert t.dtype == torch.int64 and bool(((t >= 0) & (t < 1000)).all())
    reversed_batch = modality.collate(modality.load_records(pairs_file)[::-1])
    torch.testing.assert_close(modality.draw(reversed_batch, 5, policy)["noise"], draw["noise"].flip(0))


def train_lora(case, pairs_file, tmp_path, steps=3, beta=5000.0):
    modality, policy = make_modality(case)
    records = modality.prepare(modality.load_records(pairs_file), str(tmp_path / "cache"))
    return modality, policy, lora_dpo_steps(modality, policy, records, steps, beta)


@pytest.mark.parametrize("case", ["wan", "cogvideox"])
def test_lora_export_reloads_into_the_pipeline(case, pairs_file, tmp_path):
    modality, policy, losses = train_lora(case, pairs_file, tmp_path)
    assert losses[0] == pytest.approx(0.6931, abs=1e-3)  # adapters start as a copy: margin 0
    assert losses[-1] < losses[0]
    written = modality.export(policy, str(tmp_path / "out"), "# tiny video DPO LoRA")
    assert {p.rsplit("/", 1)[-1] for p in written} == {
        "pytorch_lora_weights.safetensors", "adapter_config.json", "adapter_model.safetensors", "README.md"}

    trained = transformer_output(policy, case)
    builder, args = KINDS[case]
    pipe = modality.parts.with_transformer(getattr(vd, builder)(**args))  # a plain WanPipeline / CogVideoXPipeline
    assert type(pipe) is vd.PIPELINES[case]
    before = transformer_output(pipe.transformer, case)
    pipe.load_lora_weights(str(tmp_path / "out"))
    reloaded = transformer_output(pipe.transformer, case)
    torch.testing.assert_close(reloaded, trained, rtol=1e-5, atol=1e-5)
    assert (reloaded - before).abs().max() > 1e-4


@pytest.mark.parametrize("kind", ["wan", "cogvideox"])
def test_a_local_pipeline_folder_loads(kind, tmp_path):
    """``model.path``: a diffusers folder saved by ``save_pretrained`` loads as transformer
    (trainable) and frozen parts, and predicts what the saved transformer does."""
    parts = getattr(vd, f"tiny_{kind}_parts")()
    transformer = getattr(vd, f"tiny_{kind}")()
    parts.with_transformer(transformer).save_pretrained(str(tmp_path / "model"))
    modality = VideoDiffusionModality(**{k: v for k, v in TINY.items() if v is not None})
    loaded = modality.load_policy(ModelSpec(path=str(tmp_path / "model")))
    assert modality.parts.kind == kind and modality.text_tokens == vd.TINY_T5_TOKENS
    torch.testing.assert_close(transformer_output(loaded, kind), transformer_output(transformer, kind))
    with pytest.raises(ConfigError, match="WanPipeline or CogVideoXPipeline"):
        vd.kind_of(str(tmp_path))


def test_captions_the_text_encoder_cuts_are_counted(pairs_file):
    from mmalign.data.checks import RowChecks

    modality, _ = make_modality("wan")  # 16 tokens of single characters: every example caption is longer
    checks = RowChecks()
    records = modality.load_records(pairs_file, checks=checks)
    assert checks.counts["repaired: caption truncated"] == len(records) == 4


def test_a_caption_length_cogvideox_cannot_take_is_refused_at_load():
    modality = VideoDiffusionModality(height=32, width=32, num_frames=9, max_sequence_length=8)
    with pytest.raises(ConfigError, match="max_sequence_length is 8, but a CogVideoX transformer takes exactly "
                                          "max_text_seq_length=16"):
        modality.load_policy(ModelSpec(builder="tiny_cogvideox"))


@pytest.mark.parametrize("case", ["wan", "cogvideox"])
def test_the_conformance_kit_passes(case, pairs_file):
    builder, args = KINDS[case]
    options = {k: v for k, v in TINY.items() if v is not None}
    results = check_modality("video_diffusion", spec=ModelSpec(builder=builder, builder_args=args), data=pairs_file,
                             options=options if case != "wan" else {**options, "max_sequence_length": 16},
                             schema="video_pairs")
    failed = [str(r) for r in results if not r.ok]
    assert len(results) == 9 and not failed, failed
