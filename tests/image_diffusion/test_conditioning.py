"""SDXL conditioning matches the diffusers pipeline; caption dropout gives the pipeline's empty
prompt; time ids carry the original size and the real crop."""
from __future__ import annotations

import torch

from mmalign.modalities.image_diffusion.encode import empty_prompt, encode_prompts
from mmalign.modalities.image_diffusion.images import crop_top_left
from mmalign.modalities.image_diffusion.sampling import build_pipeline

from diffusion_helpers import count_calls, make_modality, png, write_parquet


def test_sdxl_prompt_embeddings_match_the_pipeline():
    modality, policy = make_modality("tiny_sdxl")
    pipe = build_pipeline(modality.parts, policy)
    embeds, _, pooled, _ = pipe.encode_prompt(["a cube", "two balls"], device="cpu", do_classifier_free_guidance=False)
    ours = encode_prompts(modality.parts, ["a cube", "two balls"])
    torch.testing.assert_close(ours["prompt_embeds"], embeds, rtol=0, atol=0)
    torch.testing.assert_close(ours["pooled"], pooled, rtol=0, atol=0)
    assert ours["prompt_embeds"].shape[-1] == 64  # penultimate states of both encoders: 32 + 32


def test_empty_prompt_is_what_each_pipeline_gives():
    sdxl, _ = make_modality("tiny_sdxl")
    empty = empty_prompt(sdxl.parts)  # force_zeros_for_empty_prompt: zeros
    assert torch.count_nonzero(empty["prompt_embeds"]) == 0 and torch.count_nonzero(empty["pooled"]) == 0
    sd15, unet = make_modality("tiny_sd15")
    _, negative = build_pipeline(sd15.parts, unet).encode_prompt(
        ["x"], device="cpu", num_images_per_prompt=1, do_classifier_free_guidance=True, negative_prompt=None)
    torch.testing.assert_close(empty_prompt(sd15.parts)["prompt_embeds"], negative, rtol=0, atol=0)


def test_dropped_captions_get_zeros_and_keep_time_ids(tmp_path):
    rows = [dict(caption=f"c {i}", jpg_0=png(size=(48, 40)), jpg_1=png((5, 5, 5), size=(48, 40)), label_0=1.0)
            for i in range(6)]
    path = write_parquet(tmp_path / "d.parquet", rows)
    modality, policy = make_modality("tiny_sdxl", caption_dropout=0.5, cache=False, crop="random")
    batch = modality.collate(modality.load_records(path, "pickapic"))
    draw = modality.draw(batch, 1, policy)
    frozen = modality._frozen(batch, draw)
    drop = draw["drop"]
    assert set(drop.tolist()) == {True, False}
    assert torch.count_nonzero(frozen.prompt_embeds[drop]) == 0 and torch.count_nonzero(frozen.pooled[drop]) == 0
    assert torch.count_nonzero(frozen.prompt_embeds[~drop]) > 0
    # 48x40 (w x h): short side 40 -> 32, so 48 -> 38; the crop box is in that resized frame
    for i in range(len(batch)):
        top, left = crop_top_left((38, 32), 32, (float(draw["crop"][i, 0]), float(draw["crop"][i, 1])))
        torch.testing.assert_close(frozen.time_ids[i], torch.tensor([40.0, 48.0, top, left, 32.0, 32.0]))
    assert len({tuple(t.tolist()) for t in frozen.time_ids}) > 1  # random crops differ between rows


def test_frozen_inputs_live_in_batch_frozen_and_are_encoded_once_per_step(pickapic_file):
    """The draw holds randomness only; the VAE and text encoders run on the first surrogate
    call (policy) and ``batch.frozen`` serves the second (reference). The same batch drawn
    again for another epoch gets inputs for its own flips and caption dropout."""
    modality, policy = make_modality("tiny_sdxl", cache=False, caption_dropout=0.5, random_flip=True)
    records = modality.load_records(pickapic_file, "pickapic")
    batch = modality.collate(records)
    calls = count_calls(modality)
    draw = modality.draw(batch, 0, policy)
    assert set(draw.values) == {"timesteps", "noise", "latent_eps", "drop", "flip", "crop"} and not batch.frozen
    with torch.no_grad():
        first = modality.surrogate(policy, batch, draw, frozenset())
        after_first = dict(calls)
        again = modality.surrogate(policy, batch, draw, frozenset())
    # the batch's images in one VAE call; its prompts and the empty prompt (caption dropout)
    assert after_first == {"vae_encoder": 1, "text_encoder": 2, "text_encoder_2": 2}
    assert calls == after_first and set(batch.frozen) == {"image_diffusion"}
    torch.testing.assert_close(again.chosen, first.chosen, rtol=0, atol=0)

    batch.epoch = fresh_epoch = 1
    redraw = modality.draw(batch, 0, policy)
    assert not (torch.equal(redraw["flip"], draw["flip"]) and torch.equal(redraw["drop"], draw["drop"]))
    fresh = modality.collate(records)
    fresh.epoch = fresh_epoch
    with torch.no_grad():
        reused_batch = modality.surrogate(policy, batch, redraw, frozenset())
        fresh_batch = modality.surrogate(policy, fresh, modality.draw(fresh, 0, policy), frozenset())
    assert calls["vae_encoder"] == 3  # encoded again for the new draw, and for the fresh batch
    torch.testing.assert_close(reused_batch.chosen, fresh_batch.chosen, rtol=0, atol=0)
