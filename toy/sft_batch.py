"""The supervised batch the toy vision- and video-language models are pretrained on."""
from __future__ import annotations

import torch

#: what a processor returns about the text, not the media
TEXT_KEYS = ("input_ids", "attention_mask", "mm_token_type_ids", "token_type_ids")


def answer_batch(processor, kind: str, prompts: list[str], answers: list[str], **media) -> dict:
    """Right-padded ``input_ids``, ``attention_mask``, ``labels`` (answer tokens and EOS only) and
    the processor's media inputs, tokenized as the vision_language modality does: the
    chat-template prompt with its ``kind`` (``image`` or ``video``) expanded by the processor
    (``media``: its ``images=`` / ``videos=`` arguments), then the answer's tokens and EOS."""
    tok = processor.tokenizer
    messages = [[{"role": "user", "content": [{"type": kind}, {"type": "text", "text": p}]}] for p in prompts]
    texts = [processor.apply_chat_template(m, add_generation_prompt=True, tokenize=False) for m in messages]
    prompt_in = processor(text=texts, padding=True, return_tensors="pt", **media)
    rows, labels = [], []
    for ids, mask, answer in zip(prompt_in["input_ids"], prompt_in["attention_mask"], answers):
        prompt_ids = ids[mask.bool()].tolist()
        answer_ids = tok(answer, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        rows.append(prompt_ids + answer_ids)
        labels.append([-100] * len(prompt_ids) + answer_ids)
    width = max(len(r) for r in rows)
    pad = lambda seq, v: seq + [v] * (width - len(seq))  # noqa: E731
    out = {"input_ids": torch.tensor([pad(r, tok.pad_token_id) for r in rows]),
           "attention_mask": torch.tensor([pad([1] * len(r), 0) for r in rows]),
           "labels": torch.tensor([pad(lab, -100) for lab in labels])}
    out.update({k: v for k, v in prompt_in.items() if k not in TEXT_KEYS and isinstance(v, torch.Tensor)})
    return out
