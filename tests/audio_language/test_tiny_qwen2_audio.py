"""The tiny Qwen2-Audio: the token counts its docstring promises hold (for clips shorter than the
2 s chunk too, and for clips of different lengths in one batch), a chosen / rejected pair on one
clip trains down to the audio encoder, it saves and reloads offline to identical logits, and it
generates."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import AutoModelForMultimodalLM, AutoProcessor

from mmalign.models.qwen2_audio import (
    MAX_SOURCE_POSITIONS,
    NUM_FRAMES,
    NUM_MEL_BINS,
    SAMPLING_RATE,
    audio_tokens,
    tiny_qwen2_audio_parts,
)

QUESTION = "What is the sound?"
CHOSEN, REJECTED = "a dog is barking on the grass", "a cat is sleeping"
#: clip seconds -> <|AUDIO|> tokens, as the module docstring states (3 s is cut to the 2 s chunk)
TOKENS = {1.0: 25, 0.5: 12, 2.0: 50, 3.0: 50}


def tone(seconds: float, hz: float = 440.0, seed: int = 0) -> np.ndarray:
    """A sine tone with a little noise, mono float32 at 16 kHz."""
    t = np.arange(int(seconds * SAMPLING_RATE)) / SAMPLING_RATE
    noise = np.random.default_rng(seed).normal(0.0, 0.05, t.shape)
    return (0.5 * np.sin(2 * np.pi * hz * t) + noise).astype(np.float32)


@pytest.fixture(scope="module")
def parts():
    return tiny_qwen2_audio_parts()


def conversation(answer: str | None = None, clips: int = 1) -> list[dict]:
    content = [{"type": "audio"}] * clips + [{"type": "text", "text": QUESTION}]
    turns = [{"role": "user", "content": content}]
    if answer is not None:
        turns.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
    return turns


def prompt_text(processor) -> str:
    return processor.apply_chat_template(conversation(), tokenize=False, add_generation_prompt=True)


def encode(processor, texts: list[str], clips: list[np.ndarray]):
    return processor(text=texts, audio=clips, sampling_rate=SAMPLING_RATE, padding=True, return_tensors="pt")


def pair_batch(processor, clip: np.ndarray):
    """Chosen and rejected answers to one question on one clip, right-padded, with a mask of
    the answer tokens."""
    texts = [processor.apply_chat_template(conversation(answer), tokenize=False) for answer in (CHOSEN, REJECTED)]
    batch = encode(processor, texts, [clip, clip])
    prompt_len = encode(processor, [prompt_text(processor)], [clip])["input_ids"].shape[1]
    positions = torch.arange(batch["input_ids"].shape[1])
    answer_mask = (positions >= prompt_len) & batch["attention_mask"].bool()
    return batch, answer_mask


def answer_logprobs(logits: torch.Tensor, input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Summed log-probability of each row's answer tokens (what DPO compares)."""
    logp = logits[:, :-1].float().log_softmax(-1).gather(-1, input_ids[:, 1:, None])[..., 0]
    return (logp * mask[:, 1:]).sum(-1)


def placeholder_counts(processor, batch) -> list[int]:
    return (batch["input_ids"] == processor.audio_token_id).sum(1).tolist()


def test_chat_template_numbers_audio_items(parts):
    _, processor = parts
    text = processor.apply_chat_template(conversation(clips=2), tokenize=False, add_generation_prompt=True)
    assert text == ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
                    "Audio 1: <|audio_bos|><|AUDIO|><|audio_eos|>\nAudio 2: <|audio_bos|><|AUDIO|><|audio_eos|>\n"
                    f"{QUESTION}<|im_end|>\n<|im_start|>assistant\n")


@pytest.mark.parametrize("seconds", sorted(TOKENS))
def test_token_count_per_clip(parts, seconds):
    model, processor = parts
    batch = encode(processor, [prompt_text(processor)], [tone(seconds)])
    # every clip is padded (or cut) to the chunk; the mask marks its own frames
    assert tuple(batch["input_features"].shape) == (1, NUM_MEL_BINS, NUM_FRAMES) == (1, 16, 2 * MAX_SOURCE_POSITIONS)
    frames = int(batch["feature_attention_mask"].sum())
    assert frames == min(int(seconds * 100), NUM_FRAMES)
    assert placeholder_counts(processor, batch) == [TOKENS[seconds]] == [audio_tokens(int(seconds * SAMPLING_RATE))]
    # the encoder's own count from the mask is the processor's
    _, out = model.model.audio_tower._get_feat_extract_output_lengths(batch["feature_attention_mask"].sum(-1))
    assert out.tolist() == [TOKENS[seconds]]


def test_two_clips_of_different_lengths_in_one_batch(parts):
    """A 1 s and a 0.5 s clip in one batch: 25 and 12 tokens, and the short row (right-padded
    text, chunk-padded audio) gives the same logits as alone."""
    model, processor = parts
    prompt = prompt_text(processor)
    short = tone(0.5, hz=300.0, seed=1)
    batch = encode(processor, [prompt, prompt], [tone(1.0), short])
    assert placeholder_counts(processor, batch) == [25, 12]
    assert batch["feature_attention_mask"].sum(-1).tolist() == [100, 50]
    alone = encode(processor, [prompt], [short])
    short_len = int(batch["attention_mask"][1].sum())
    assert alone["input_ids"].shape[1] == short_len
    assert torch.equal(alone["input_features"][0], batch["input_features"][1])
    with torch.no_grad():
        together = model(**batch).logits[1, :short_len]
        single = model(**alone).logits[0]
    torch.testing.assert_close(single, together, rtol=1e-4, atol=1e-4)


def test_pair_on_one_clip_trains(parts):
    model, processor = parts
    batch, mask = pair_batch(processor, tone(1.0))
    assert placeholder_counts(processor, batch) == [25, 25]
    model.zero_grad()
    model.train()
    logits = model(**batch).logits
    model.eval()
    chosen, rejected = answer_logprobs(logits, batch["input_ids"], mask)
    # a DPO-shaped loss on the pair (no reference): the gradient must reach the audio encoder
    loss = -torch.nn.functional.logsigmoid(0.1 * (chosen - rejected))
    loss.backward()
    for weight in (model.model.audio_tower.conv1.weight, model.model.audio_tower.layers[0].self_attn.q_proj.weight,
                   model.model.multi_modal_projector.linear.weight):
        assert weight.grad is not None and torch.isfinite(weight.grad).all() and weight.grad.abs().sum() > 0
    assert torch.isfinite(loss)
    model.zero_grad()


def test_save_and_reload_offline_gives_identical_logits(parts, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model, processor = parts
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    reloaded = AutoProcessor.from_pretrained(tmp_path, local_files_only=True)
    # Qwen2-Audio maps to AutoModelForMultimodalLM (and AutoModelForSeq2SeqLM), not to
    # AutoModelForImageTextToText or AutoModelForCausalLM
    again = AutoModelForMultimodalLM.from_pretrained(tmp_path, local_files_only=True).eval()
    assert type(reloaded) is type(processor) and type(again) is type(model)
    assert reloaded.audio_token_id == processor.audio_token_id
    assert reloaded.feature_extractor.to_dict() == processor.feature_extractor.to_dict()
    clip = tone(1.0)
    batch, _ = pair_batch(processor, clip)
    batch_again, _ = pair_batch(reloaded, clip)
    assert batch.keys() == batch_again.keys()
    assert all(torch.equal(batch[key], batch_again[key]) for key in batch)
    with torch.no_grad():
        assert torch.equal(model(**batch).logits, again(**batch_again).logits)


def test_generate_three_tokens(parts):
    model, processor = parts
    inputs = encode(processor, [prompt_text(processor)], [tone(0.5)])
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=3, do_sample=False)
    assert out.shape[0] == 1 and inputs["input_ids"].shape[1] < out.shape[1] <= inputs["input_ids"].shape[1] + 3


def test_registered_as_builder():
    """Listed where ``mmalign.models.get_builder`` looks (without importing every module)."""
    from mmalign import models
    from mmalign.models import qwen2_audio

    assert "qwen2_audio" in models.MODULES
    assert qwen2_audio.BUILDERS == {"tiny_qwen2_audio": qwen2_audio.tiny_qwen2_audio}
    assert qwen2_audio.PARTS_BUILDERS == {"tiny_qwen2_audio": qwen2_audio.tiny_qwen2_audio_parts}
