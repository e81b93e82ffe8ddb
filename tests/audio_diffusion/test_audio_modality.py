"""The plugin through the conformance kit on both forms, LoRA exports reloaded by diffusers,
samples written as WAV, and the CLAP scorer."""
from __future__ import annotations

from pathlib import Path

import pytest
import soundfile as sf
import torch
from peft import LoraConfig

from mmalign.modality import ModelSpec
from mmalign.testing import check_modality

from mmalign.modalities.audio_diffusion import AudioDiffusionModality
from mmalign.modalities.audio_diffusion.example import TINY, example


@pytest.mark.parametrize("builder", ["tiny_ace_step", "tiny_tango"])
def test_check_plugin_passes(builder, tmp_path):
    given = example(str(tmp_path), builder)
    checks = check_modality("audio_diffusion", spec=given["spec"], data=given["data"], options=given["options"],
                            schema=given["schema"])
    assert all(c.ok for c in checks), [str(c) for c in checks]


def _lora(model, target):
    model.add_adapter(LoraConfig(r=4, lora_alpha=8, target_modules=list(target), init_lora_weights="gaussian"),
                      adapter_name="default")
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():  # a trained adapter: B is zero at initialisation
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
    return model


def _ace_output(model, parts) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    x, cond = torch.randn(1, 12, 8, generator=gen), torch.randn(1, 5, 32, generator=gen)
    ctx = torch.cat([torch.zeros(1, 12, 8), torch.ones(1, 12, 8)], -1)
    with torch.no_grad():
        return model(hidden_states=x, timestep=torch.tensor([0.4]), timestep_r=torch.tensor([0.4]),
                     encoder_hidden_states=cond, context_latents=ctx).sample


def test_ace_step_lora_loads_into_the_pipeline(tmp_path):
    modality = AudioDiffusionModality(**TINY["tiny_ace_step"])
    policy = _lora(modality.load_policy(ModelSpec(builder="tiny_ace_step")), modality.lora_target_modules)
    trained = _ace_output(policy, modality.parts)
    written = modality.export(policy, str(tmp_path / "out"), "# tiny")
    assert any(p.endswith("pytorch_lora_weights.safetensors") for p in written)
    from mmalign.models.audio_diffusion import tiny_ace_step
    pipe = modality.parts.with_transformer(tiny_ace_step())
    base = _ace_output(pipe.transformer, modality.parts)
    pipe.load_lora_weights(str(tmp_path / "out"))
    reloaded = _ace_output(pipe.transformer, modality.parts)
    assert not torch.allclose(base, trained, atol=1e-4)
    torch.testing.assert_close(reloaded, trained, atol=1e-5, rtol=1e-5)


def test_tango_unet_lora_loads_through_load_lora_adapter(tmp_path):
    from mmalign.models.audio_diffusion import tiny_tango

    modality = AudioDiffusionModality(**TINY["tiny_tango"])
    policy = _lora(modality.load_policy(ModelSpec(builder="tiny_tango")), modality.lora_target_modules)
    gen = torch.Generator().manual_seed(0)
    x, cond = torch.randn(1, 8, 16, 8, generator=gen), torch.randn(1, 4, 32, generator=gen)
    run = lambda m: m(x, torch.tensor([300]), encoder_hidden_states=cond).sample  # noqa: E731
    with torch.no_grad():
        trained = run(policy)
    modality.export(policy, str(tmp_path / "out"), "# tiny")
    unet = tiny_tango()
    with torch.no_grad():
        base = run(unet)
    unet.load_lora_adapter(str(tmp_path / "out"), prefix="unet", weight_name="pytorch_lora_weights.safetensors")
    with torch.no_grad():
        reloaded = run(unet)
    assert not torch.allclose(base, trained, atol=1e-4)
    torch.testing.assert_close(reloaded, trained, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("builder", ["tiny_ace_step", "tiny_tango"])
def test_samples_are_written_as_wav(builder, tmp_path):
    modality = AudioDiffusionModality(**TINY[builder], sample_steps=2)
    policy = modality.load_policy(ModelSpec(builder=builder))
    first = modality.write_samples(policy, ["a low tone"], 0, str(tmp_path / "samples" / "step-0.png"))
    info = sf.info(first)
    assert Path(first).suffix == ".wav" and info.samplerate == modality.parts.sample_rate and info.frames > 0
    again = modality.sample(policy, ["a low tone"], 1, 0)[0][0]
    back, _ = sf.read(first, dtype="float32", always_2d=True)
    assert abs(back.shape[0] - again.shape[-1]) == 0


def test_clap_scorer_scores_each_clip_for_its_prompt():
    from transformers import (ClapAudioConfig, ClapConfig, ClapFeatureExtractor, ClapModel, ClapProcessor,
                              ClapTextConfig, RobertaTokenizerFast)
    from mmalign.registry import rewards
    from mmalign.models.flow import tiny_t5_tokenizer

    torch.manual_seed(0)
    config = ClapConfig(text_config=ClapTextConfig(vocab_size=200, hidden_size=32, num_hidden_layers=1,
                                                   num_attention_heads=2, intermediate_size=32,
                                                   max_position_embeddings=80, projection_dim=16),
                        audio_config=ClapAudioConfig(spec_size=64, num_mel_bins=16, patch_size=4, patch_stride=(4, 4),
                                                     hidden_size=32, depths=[1, 1], num_attention_heads=[2, 2],
                                                     window_size=4, patch_embeds_hidden_size=16, projection_dim=16),
                        projection_dim=16)
    model = ClapModel(config)
    fe = ClapFeatureExtractor(feature_size=16, sampling_rate=8000, hop_length=64, max_length_s=1, fft_window_size=256,
                              truncation="rand_trunc")
    processor = ClapProcessor(feature_extractor=fe, tokenizer=tiny_t5_tokenizer())
    scorer = rewards.get("clap")(model=model, processor=processor)
    from mmalign.modalities.audio_diffusion.example import tone
    scores = scorer.score([tone(220)[0], tone(1800)], ["a low tone", "a high tone"], rate=8000)
    assert scores.shape == (2,) and torch.all(scores.abs() <= 1.0) and scores[0] != scores[1]
