"""The tiny video-language models (Qwen2.5-VL, LLaVA-NeXT-Video): a chosen / rejected pair on
one clip (written by write_mp4, read by read_clip) trains, the token counts their docstrings
promise hold, they save and reload offline to identical logits, and they generate."""
from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("decord")
pytest.importorskip("av")

from transformers import AutoModelForImageTextToText, AutoProcessor  # noqa: E402
from transformers.video_utils import VideoMetadata  # noqa: E402

from mmalign.models.llava_next_video import tiny_llava_next_video_parts  # noqa: E402
from mmalign.models.qwen_vl import tiny_qwen25_vl_parts  # noqa: E402
from mmalign.modalities.video_io import Clip, read_clip, write_mp4  # noqa: E402

QUESTION = "What is the dog doing?"
CHOSEN, REJECTED = "the dog is running on the grass", "a cat is sleeping"
NUM_FRAMES = 4
#: tokens for one 32x32 clip of NUM_FRAMES frames, as each builder's docstring states
VIDEO_TOKENS = {"qwen25_vl": 8, "llava_next_video": 16}
BUILDERS = {"qwen25_vl": tiny_qwen25_vl_parts, "llava_next_video": tiny_llava_next_video_parts}


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Clip:
    """8 frames of 32x32 noise (every patch differs, so the vision tower sees texture)."""
    frames = np.random.default_rng(0).integers(0, 256, (8, 32, 32, 3), dtype=np.uint8)
    path = tmp_path_factory.mktemp("clip") / "noise.mp4"
    write_mp4(frames, path, fps=8)
    return read_clip(path, num_frames=NUM_FRAMES)


@pytest.fixture(scope="module", params=sorted(BUILDERS))
def family(request):
    model, processor = BUILDERS[request.param]()
    return request.param, model, processor


def conversation(kind: str, answer: str | None = None) -> list[dict]:
    turns = [{"role": "user", "content": [{"type": kind}, {"type": "text", "text": QUESTION}]}]
    if answer is not None:
        turns.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
    return turns


def video_kwargs(name: str, clip: Clip, rows: int) -> dict:
    """Qwen-VL times frames from their metadata (else it assumes 24 fps); LLaVA-NeXT-Video
    does not use time."""
    kwargs = {"videos": [clip.frames] * rows}
    if name == "qwen25_vl":
        metadata = VideoMetadata(total_num_frames=clip.total_frames, fps=clip.fps, frames_indices=clip.indices)
        kwargs["video_metadata"] = [metadata] * rows
    return kwargs


def pair_batch(name: str, processor, clip: Clip, kind: str = "video", image=None):
    """Chosen and rejected answers to one question on one clip (or image), right-padded,
    with a mask of the answer tokens."""
    texts = [processor.apply_chat_template(conversation(kind, answer), tokenize=False)
             for answer in (CHOSEN, REJECTED)]
    prompt = processor.apply_chat_template(conversation(kind), tokenize=False, add_generation_prompt=True)
    media = video_kwargs(name, clip, 2) if kind == "video" else {"images": [image, image]}
    one = video_kwargs(name, clip, 1) if kind == "video" else {"images": [image]}
    batch = processor(text=texts, padding=True, return_tensors="pt", **media)
    prompt_len = processor(text=[prompt], return_tensors="pt", **one)["input_ids"].shape[1]
    positions = torch.arange(batch["input_ids"].shape[1])
    answer_mask = (positions >= prompt_len) & batch["attention_mask"].bool()
    return batch, answer_mask


def answer_logprobs(logits: torch.Tensor, input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Summed log-probability of each row's answer tokens (what DPO compares)."""
    logp = logits[:, :-1].float().log_softmax(-1).gather(-1, input_ids[:, 1:, None])[..., 0]
    return (logp * mask[:, 1:]).sum(-1)


def patch_embedding(model) -> torch.Tensor:
    tower = model.model.visual if hasattr(model.model, "visual") else model.model.vision_tower
    embed = tower.patch_embed.proj if hasattr(tower, "patch_embed") else tower.embeddings.patch_embedding
    return embed.weight


def placeholder_counts(processor, batch) -> list[int]:
    return (batch["input_ids"] == processor.video_token_id).sum(1).tolist()


def test_pair_on_one_clip_trains(family, clip):
    name, model, processor = family
    batch, mask = pair_batch(name, processor, clip)
    assert placeholder_counts(processor, batch) == [VIDEO_TOKENS[name]] * 2
    model.zero_grad()
    model.train()
    logits = model(**batch).logits
    model.eval()
    chosen, rejected = answer_logprobs(logits, batch["input_ids"], mask)
    # a DPO-shaped loss on the pair (no reference): the gradient must reach the pixels' encoder
    loss = -torch.nn.functional.logsigmoid(0.1 * (chosen - rejected))
    loss.backward()
    grad = patch_embedding(model).grad
    assert torch.isfinite(loss) and grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0
    model.zero_grad()


def test_save_and_reload_offline_gives_identical_logits(family, clip, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    name, model, processor = family
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    reloaded = AutoProcessor.from_pretrained(tmp_path, local_files_only=True)
    again = AutoModelForImageTextToText.from_pretrained(tmp_path, local_files_only=True).eval()
    assert type(reloaded) is type(processor) and type(again) is type(model)
    batch, _ = pair_batch(name, processor, clip)
    batch_again, _ = pair_batch(name, reloaded, clip)
    assert batch.keys() == batch_again.keys()
    assert all(torch.equal(batch[key], batch_again[key]) for key in batch)
    with torch.no_grad():
        assert torch.equal(model(**batch).logits, again(**batch_again).logits)


def test_generate_three_tokens(family, clip):
    name, model, processor = family
    prompt = processor.apply_chat_template(conversation("video"), tokenize=False, add_generation_prompt=True)
    inputs = processor(text=[prompt], return_tensors="pt", **video_kwargs(name, clip, 1))
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=3, do_sample=False)
    assert out.shape[0] == 1 and inputs["input_ids"].shape[1] < out.shape[1] <= inputs["input_ids"].shape[1] + 3


def test_qwen_inputs_are_flattened_patches_per_grid(clip):
    """Qwen-VL's pixels are one [sum(t*h*w), 3*tps*p*p] matrix for the whole batch: a row's
    share is sliced by video_grid_thw.prod(-1), and that row alone gives the same logits."""
    model, processor = tiny_qwen25_vl_parts()
    batch, _ = pair_batch("qwen25_vl", processor, clip)
    grid = batch["video_grid_thw"]
    assert grid.tolist() == [[2, 4, 4]] * 2 and tuple(batch["pixel_values_videos"].shape) == (64, 3 * 2 * 8 * 8)
    # second_per_grid_ts: temporal_patch_size / the sampled frames' rate, from the metadata
    assert batch["second_per_grid_ts"].tolist() == pytest.approx([2 / clip.sampled_fps] * 2)
    assert (batch["mm_token_type_ids"] == 2).sum(1).tolist() == [VIDEO_TOKENS["qwen25_vl"]] * 2  # 2 marks video
    patches = grid.prod(-1).tolist()
    second_len = int(batch["attention_mask"][1].sum())
    second = {key: value[1:2] for key, value in batch.items() if key not in ("pixel_values_videos", "video_grid_thw")}
    second = {key: value[:, :second_len] if value.dim() == 2 else value for key, value in second.items()}
    second["pixel_values_videos"] = batch["pixel_values_videos"][patches[0]:patches[0] + patches[1]]
    second["video_grid_thw"] = grid[1:2]
    with torch.no_grad():
        together = model(**batch).logits[1, :second_len]
        alone = model(**second).logits[0]
    torch.testing.assert_close(alone, together, rtol=1e-4, atol=1e-4)


def test_qwen_image_pair_trains(clip):
    from PIL import Image

    model, processor = tiny_qwen25_vl_parts()
    image = Image.fromarray(clip.frames[0].numpy())
    batch, mask = pair_batch("qwen25_vl", processor, clip, kind="image", image=image)
    # a 32x32 image: grid (1, 4, 4) -> 16 patches -> 4 tokens (the builder's docstring)
    assert batch["image_grid_thw"].tolist() == [[1, 4, 4]] * 2
    assert tuple(batch["pixel_values"].shape) == (32, 3 * 2 * 8 * 8)
    assert (batch["input_ids"] == processor.image_token_id).sum(1).tolist() == [4, 4]
    model.train()
    chosen, rejected = answer_logprobs(model(**batch).logits, batch["input_ids"], mask)
    (rejected - chosen).backward()
    assert patch_embedding(model).grad.abs().sum() > 0
