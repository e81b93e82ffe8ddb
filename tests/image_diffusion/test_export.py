"""A LoRA policy trained a few steps on the Diffusion-DPO loss, exported, and reloaded into
the diffusers pipeline with ``load_lora_weights``: the reloaded UNet predicts what the
trained one does and not what the base does. Full fine-tunes export a UNet folder."""
from __future__ import annotations

import pytest
import torch
from diffusers import UNet2DConditionModel
from peft import PeftModel
from PIL import Image

from mmalign.models import diffusion as builders
from mmalign.errors import ConfigError
from mmalign.testing import lora_dpo_steps
from mmalign.modalities.image_diffusion.sampling import build_pipeline, save_grid

from diffusion_helpers import make_modality


def train_lora(builder, pickapic_file, tmp_path, steps=3):
    modality, policy = make_modality(builder)
    records = modality.prepare(modality.load_records(pickapic_file, "pickapic"), str(tmp_path / "cache"))
    return modality, policy, lora_dpo_steps(modality, policy, records, steps, beta=5000.0)


def unet_output(unet, sdxl: bool) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 16, 16, generator=gen)
    embeds = torch.randn(2, 16, 64 if sdxl else 32, generator=gen)
    added = {"text_embeds": torch.randn(2, 32, generator=gen), "time_ids": torch.ones(2, 6)} if sdxl else None
    with torch.no_grad():
        return unet(x, torch.tensor([50, 500]), encoder_hidden_states=embeds, added_cond_kwargs=added).sample


@pytest.mark.parametrize("builder", ["tiny_sd15", "tiny_sdxl"])
def test_lora_export_reloads_into_the_pipeline(builder, pickapic_file, tmp_path):
    sdxl = builder == "tiny_sdxl"
    modality, policy, losses = train_lora(builder, pickapic_file, tmp_path)
    assert losses[-1] < losses[0]  # training on the fixed draw moves the policy
    written = modality.export(policy, str(tmp_path / "out"), "# tiny Diffusion-DPO LoRA")
    assert {p.rsplit("/", 1)[-1] for p in written} == {
        "pytorch_lora_weights.safetensors", "adapter_config.json", "adapter_model.safetensors", "README.md"}
    assert (tmp_path / "out" / "README.md").read_text().startswith("# tiny Diffusion-DPO LoRA")

    trained = unet_output(policy, sdxl)
    base = getattr(builders, builder)()
    base_out = unet_output(base, sdxl)
    pipe = build_pipeline(modality.parts, base)
    pipe.load_lora_weights(str(tmp_path / "out"))
    reloaded = unet_output(pipe.unet, sdxl)
    torch.testing.assert_close(reloaded, trained, rtol=1e-5, atol=1e-5)
    assert (reloaded - base_out).abs().max() > 1e-3

    # the peft adapter folder reloads too
    fresh = PeftModel.from_pretrained(getattr(builders, builder)(), str(tmp_path / "out" / "peft_adapter"))
    torch.testing.assert_close(unet_output(fresh.get_base_model(), sdxl), trained, rtol=1e-5, atol=1e-5)


def test_full_finetune_exports_a_unet_folder(pickapic_file, tmp_path):
    modality, policy = make_modality("tiny_sd15")
    with torch.no_grad():
        policy.conv_out.bias.add_(0.5)  # stands for a trained change
    written = modality.export(policy, str(tmp_path / "out"), "# full")
    assert str(tmp_path / "out" / "unet") in written
    assert (tmp_path / "out" / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    reloaded = UNet2DConditionModel.from_pretrained(str(tmp_path / "out" / "unet"))
    torch.testing.assert_close(unet_output(reloaded, False), unet_output(policy, False), rtol=0, atol=1e-6)


@pytest.mark.parametrize("builder", ["tiny_sd15", "tiny_sdxl"])
def test_sample_returns_a_list_per_prompt_and_a_grid(builder, tmp_path):
    """``sample(model, prompts, n, seeds)``: one list of ``n`` images per prompt; prompt ``i``'s
    images depend on its prompt and ``seeds[i]`` alone, not on the other prompts of the call;
    an int seed ``s`` means ``s, s + 1, ...``."""
    modality, policy = make_modality(builder, sample_steps=2)
    rows = modality.sample(policy, ["a cube", "a ball"], n=2, seeds=0)
    assert [len(row) for row in rows] == [2, 2] and rows[0][0].size == (32, 32)
    alone = modality.sample(policy, ["a ball"], n=2, seeds=[1])
    reordered = modality.sample(policy, ["a ball", "a cube", "a cone"], n=2, seeds=[1, 0, 9])
    for j in range(2):
        assert pixels(alone[0][j]) == pixels(rows[1][j]) == pixels(reordered[0][j])
        assert pixels(reordered[1][j]) == pixels(rows[0][j])
    assert pixels(rows[0][0]) != pixels(rows[0][1])  # a prompt's images start from different noise
    with pytest.raises(ConfigError, match="got 1 seeds for 2 prompts"):
        modality.sample(policy, ["a cube", "a ball"], n=1, seeds=[0])
    from PIL import Image

    path = save_grid([image for row in rows for image in row], str(tmp_path / "grid.png"), columns=2)
    assert Image.open(path).size == (64, 64)


def pixels(image) -> list:
    return list(image.getdata())


def distance(a, b) -> float:
    """Mean absolute difference of two images' pixels, in [0, 255]."""
    import numpy as np

    return float(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)).mean())


@pytest.mark.parametrize("builder", ["tiny_sd15", "tiny_sdxl"])
def test_init_and_strength_run_the_img2img_pipeline(builder, monkeypatch):
    """With ``init`` and ``strength`` the images come from the img2img twin of the pipeline
    (same components), with the same per-prompt seeding; bad combinations are refused."""
    from diffusers import StableDiffusionImg2ImgPipeline, StableDiffusionXLImg2ImgPipeline

    from mmalign.modalities.image_diffusion import sampling

    modality, policy = make_modality(builder, sample_steps=4)
    built = []
    real = sampling.build_pipeline
    monkeypatch.setattr(sampling, "build_pipeline", lambda *a, **kw: built.append(real(*a, **kw)) or built[-1])
    init = [Image.new("RGB", (40, 36), (200, 30, 30)), Image.new("RGB", (32, 32), (20, 30, 220))]
    rows = modality.sample(policy, ["a cube", "a ball"], 2, [3, 4], init=init, strength=0.5)
    alone = modality.sample(policy, ["a ball"], 2, [4], init=init[1:], strength=0.5)
    assert [len(r) for r in rows] == [2, 2] and rows[0][0].size == (32, 32)
    assert pixels(alone[0][1]) == pixels(rows[1][1])
    twin = StableDiffusionXLImg2ImgPipeline if builder == "tiny_sdxl" else StableDiffusionImg2ImgPipeline
    assert [type(p) for p in built] == [twin, twin] and built[0].unet is policy and built[0].vae is modality.parts.vae
    for bad, message in (({"init": init}, "together"), ({"strength": 0.5}, "together"),
                         ({"init": init, "strength": 0.1}, "leave at least one of the 4"),
                         ({"init": init[:1], "strength": 0.5}, "got 1 init images for 2 prompts")):
        with pytest.raises(ConfigError, match=message):
            modality.sample(policy, ["a cube", "a ball"], 1, 0, **bad)


def test_small_strength_stays_close_to_the_init_image():
    """On the toy checkpoint (a trained VAE, so a latent decodes back to its image): with
    strength 0.1 only the last tenth of the schedule runs, and the image stays close to the
    start image; with strength 1 it is drawn from pure noise and is far from it."""
    from mmalign.modality import ModelSpec
    from mmalign.modalities.image_diffusion import ImageDiffusionModality
    from mmalign.toy import checkpoints, shapes

    modality = ImageDiffusionModality(resolution=shapes.SIZE, sample_steps=20, guidance_scale=4.0)
    unet = modality.load_policy(ModelSpec(path=str(checkpoints.DIFFUSION)))
    prompts = ["a red circle", "a blue square"]
    init = [shapes.render(shapes.single_scene(i, shape=shape, colour=colour))
            for i, (colour, shape) in enumerate([("red", "circle"), ("blue", "square")])]
    near = modality.sample(unet, prompts, 1, 0, init=init, strength=0.1)
    far = modality.sample(unet, prompts, 1, 0, init=init, strength=1.0)
    for i in range(2):
        d_near, d_far = distance(near[i][0], init[i]), distance(far[i][0], init[i])
        assert d_near < 12 and d_near < d_far / 2, (d_near, d_far)
