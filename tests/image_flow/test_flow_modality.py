"""The image-flow modality on tiny SD3 and FLUX models: LoRA training with the reference as
the adapters off, an export that the diffusers pipeline loads with ``load_lora_weights``, the
frozen-work cache, the per-row flow times, sampling, and loading a local pipeline folder."""
from __future__ import annotations

import pytest
import torch

from mmalign.errors import ConfigError
from mmalign.testing import lora_dpo_steps
from mmalign.modality import ModelSpec, row_generator
from mmalign.models import flow

from mmalign.modalities.denoising.flow_time import flow_timestep_sampler
from mmalign.modalities.image_flow import ImageFlowModality

from flow_helpers import KINDS, make_modality, transformer_output


def train_lora(case, pickapic_file, tmp_path, steps=3, beta=500.0):
    modality, policy = make_modality(case)
    records = modality.prepare(modality.load_records(pickapic_file, "pickapic"), str(tmp_path / "cache"))
    return modality, policy, lora_dpo_steps(modality, policy, records, steps, beta)


@pytest.mark.parametrize("case", ["sd3", "flux_dev"])
def test_lora_export_reloads_into_the_pipeline(case, pickapic_file, tmp_path):
    kind = "sd3" if case == "sd3" else "flux"
    modality, policy, losses = train_lora(case, pickapic_file, tmp_path)
    assert losses[0] == pytest.approx(0.6931, abs=1e-3)  # adapters start as a copy: margin 0
    assert losses[-1] < losses[0]
    written = modality.export(policy, str(tmp_path / "out"), "# tiny Flow-DPO LoRA")
    assert {p.rsplit("/", 1)[-1] for p in written} == {
        "pytorch_lora_weights.safetensors", "adapter_config.json", "adapter_model.safetensors", "README.md"}

    trained = transformer_output(policy, kind)
    builder, args = KINDS[case]
    base = getattr(flow, builder)(**args)
    pipe = modality.parts.with_transformer(base)  # a plain StableDiffusion3Pipeline / FluxPipeline
    assert type(pipe) is flow.PIPELINES[kind]
    before = transformer_output(pipe.transformer, kind)
    pipe.load_lora_weights(str(tmp_path / "out"))
    reloaded = transformer_output(pipe.transformer, kind)
    torch.testing.assert_close(reloaded, trained, rtol=1e-5, atol=1e-5)
    assert (reloaded - before).abs().max() > 1e-4


@pytest.mark.parametrize("case", ["sd3", "flux"])
def test_cached_and_live_conditioning_give_the_same_surrogate(case, pickapic_file, tmp_path):
    modality, policy = make_modality(case, caption_dropout=0.5)
    records = modality.load_records(pickapic_file, "pickapic")
    cached = modality.prepare(records, str(tmp_path / "cache"))
    live, stored = modality.collate(records), modality.collate(cached)
    assert stored.inputs["cached"] and not live.inputs["cached"]
    draw = modality.draw(live, 3, policy)
    assert bool(draw["drop"].any())  # the empty prompt is exercised too
    with torch.no_grad():
        a = modality.surrogate(policy, live, draw, frozenset())
        b = modality.surrogate(policy, stored, draw, frozenset())
    torch.testing.assert_close(a.chosen, b.chosen, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(a.rejected, b.rejected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("case", ["sd3", "flux"])
def test_each_row_draws_its_time_from_the_scheduler_config(case, pickapic_file):
    """SD3: logit-normal times with the static shift 3.0; FLUX: with the shift of its packed
    sequence length ((32 / 2 / 2)^2 = 64 tokens at 32 px), each from the row's own generator."""
    modality, policy = make_modality(case, weighting_scheme="logit_normal")
    batch = modality.collate(modality.load_records(pickapic_file, "pickapic"))
    draw = modality.draw(batch, 5, policy)
    sampler = flow_timestep_sampler(modality.parts.scheduler.config, "logit_normal", image_seq_len=64)
    expected = torch.stack([sampler(row_generator(5, sid, batch.epoch, "image_flow")) for sid in batch.sample_id])
    torch.testing.assert_close(draw["timesteps"], expected, rtol=0, atol=0)
    assert bool(((draw["timesteps"] > 0) & (draw["timesteps"] < 1)).all())
    assert draw["noise"].shape == (len(batch.sample_id), 16, 16, 16)


def _max_diff(a, b) -> int:
    import numpy as np

    return int(np.abs(np.asarray(a, dtype=np.int32) - np.asarray(b, dtype=np.int32)).max())


def test_sample_is_per_prompt_and_seed():
    modality, policy = make_modality("sd3", sample_steps=2)
    rows = modality.sample(policy, ["a cube", "a ball"], n=2, seeds=0)
    assert [len(r) for r in rows] == [2, 2] and rows[0][0].size == (32, 32)
    alone = modality.sample(policy, ["a ball"], n=2, seeds=[1])
    # the same start noise; a smaller batch only reorders float sums (a level or two of 255)
    assert _max_diff(alone[0][1], rows[1][1]) <= 2 < _max_diff(rows[1][0], rows[1][1])
    with pytest.raises(ConfigError, match="text-to-image only"):
        modality.sample(policy, ["a cube"], n=1, seeds=0, init=[rows[0][0]], strength=0.5)


@pytest.mark.parametrize("kind", ["sd3", "flux"])
def test_a_local_pipeline_folder_loads(kind, tmp_path):
    """``model.path``: a diffusers folder saved by ``save_pretrained`` loads as transformer
    (trainable) and frozen parts, and predicts what the saved transformer does."""
    parts = getattr(flow, f"tiny_{kind}_parts")()
    transformer = getattr(flow, f"tiny_{kind}")()
    parts.with_transformer(transformer).save_pretrained(str(tmp_path / "model"))
    modality = ImageFlowModality(resolution=32)
    loaded = modality.load_policy(ModelSpec(path=str(tmp_path / "model")))
    assert modality.parts.kind == kind and modality.encoders.config["max_sequence_length"] == flow.TINY_T5_TOKENS
    torch.testing.assert_close(transformer_output(loaded, kind), transformer_output(transformer, kind))
    with pytest.raises(ConfigError, match="StableDiffusion3Pipeline or FluxPipeline"):
        flow.kind_of(str(tmp_path))
