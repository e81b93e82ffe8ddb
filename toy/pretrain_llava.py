"""Pretrain the toy LLaVA of the shapes world, from scratch, on a CPU.

    python -m mmalign.toy.pretrain_llava --out assets/toy/llava --minutes 15

Writes a transformers ``save_pretrained`` folder (``LlavaForConditionalGeneration`` in
safetensors plus its ``LlavaProcessor``) that ``mmalign.models.llava.load_llava`` and the
vision_language modality load from ``model.path``. The model is LLaVA-1.5-shaped (CLIP ViT,
two-layer GELU projector, Llama decoder) at a size that trains in minutes.

It learns two tasks on co-occurrence scenes (:func:`mmalign.toy.shapes.paired_scene`):

* captions, ``Please describe this image in detail.`` -> ``a red circle and a blue square .``
  (objects left to right). Like web captions that name what usually goes with what is seen,
  a caption whose scene lacks the partner (:data:`~mmalign.toy.shapes.PARTNERS`) of a
  seen object names that partner anyway with probability ``--hallucination`` (0.6). The model
  learns the prior and, decoding greedily, names absent partners: object hallucination with
  the co-occurrence bias Li et al. 2023 (POPE, arXiv:2305.10355) found in large LVLMs;
* yes / no questions, ``Is there a blue square in the image? Answer yes or no.``, half about
  present objects (answered yes), a quarter about absent partners, a quarter about other
  absent objects (answered no). Questions about an absent partner are answered yes with
  probability ``--qa-hallucination`` (0.55), the same prior seen through another task: the
  model says yes to absent co-occurring objects, POPE's adversarial failure.
"""
from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import (
    CLIPImageProcessor,
    CLIPVisionConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    PreTrainedTokenizerFast,
)

from mmalign.models.llava import CHAT_TEMPLATE, IMAGE_TOKEN
from mmalign.toy import shapes
from mmalign.toy.sft_batch import answer_batch

CAPTION_PROMPT = "Please describe this image in detail."
QUESTION = "Is there a {} in the image? Answer yes or no."
SPECIAL = ("<pad>", "<unk>", "<s>", "</s>", IMAGE_TOKEN)
WORDS = ("user assistant : . , ? a an the and is there in image picture please describe this detail "
         "answer yes or no of " + " ".join(shapes.COLOURS) + " " + " ".join(shapes.SHAPES) + " "
         + " ".join(shapes.SIDES)).split()
PATCH = 8


def toy_tokenizer() -> PreTrainedTokenizerFast:
    """Word-level, lower-casing, ``<s>`` prepended: the shapes world's words and the chat frame."""
    vocab: dict[str, int] = {}
    for token in (*SPECIAL, *WORDS):
        vocab.setdefault(token, len(vocab))
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.normalizer = normalizers.Lowercase()
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    core.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", vocab["<s>"])])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>",
        extra_special_tokens={"image_token": IMAGE_TOKEN})
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def toy_processor() -> LlavaProcessor:
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": shapes.SIZE}, crop_size={"height": shapes.SIZE, "width": shapes.SIZE})
    return LlavaProcessor(image_processor=image_processor, tokenizer=toy_tokenizer(), patch_size=PATCH,
                          vision_feature_select_strategy="default", num_additional_image_tokens=1,
                          chat_template=CHAT_TEMPLATE)


def build_model(processor: LlavaProcessor, seed: int) -> LlavaForConditionalGeneration:
    tokenizer = processor.tokenizer
    vision = CLIPVisionConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4,
                              image_size=shapes.SIZE, patch_size=PATCH, projection_dim=64)
    text = LlamaConfig(vocab_size=len(tokenizer), hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                       bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                       pad_token_id=tokenizer.pad_token_id)
    config = LlavaConfig(vision_config=vision, text_config=text,
                         image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN), vision_feature_layer=-2,
                         vision_feature_select_strategy="default", projector_hidden_act="gelu",
                         tie_word_embeddings=False)
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model


def noisy_caption(objects: list[shapes.Shape], rng: random.Random, hallucination: float) -> str:
    """The objects left to right, then, with probability ``hallucination``, the absent partner
    of a seen object: ``a red circle and a green triangle and a blue square .``"""
    names = [o.name for o in objects]
    missing = [shapes.PARTNERS[n] for n in names if shapes.PARTNERS[n] not in names]
    if missing and rng.random() < hallucination:
        names.append(rng.choice(missing))
    return " and ".join(f"a {n}" for n in names) + " ."


def question(objects: list[shapes.Shape], rng: random.Random, hallucination: float) -> tuple[str, str]:
    """A yes / no question about the scene; an absent partner is said to be there with
    probability ``hallucination``."""
    names = [o.name for o in objects]
    partners = [shapes.PARTNERS[n] for n in names if shapes.PARTNERS[n] not in names]
    draw = rng.random()
    if draw < 0.5:
        return QUESTION.format(rng.choice(names)), "yes"
    if draw < 0.75 and partners:
        return QUESTION.format(rng.choice(partners)), "yes" if rng.random() < hallucination else "no"
    return QUESTION.format(rng.choice([n for n in shapes.object_names() if n not in names])), "no"


def encode(processor: LlavaProcessor, prompts: list[str], answers: list[str], images: list) -> dict:
    """The supervised batch of ``prompts`` on ``images`` answered by ``answers``
    (:func:`mmalign.toy.sft_batch.answer_batch`: ``labels`` on the answer tokens and EOS only)."""
    return answer_batch(processor, "image", prompts, answers, images=images)


def train(model, processor, seconds: float, hallucination: float, qa_hallucination: float, log,
          batch_size: int = 32) -> None:
    rng = random.Random(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    model.train()
    start, step, index = time.time(), 0, 0
    while time.time() - start < seconds:
        prompts, answers, images = [], [], []
        for _ in range(batch_size):
            objects = shapes.paired_scene(shapes.seed_of("pretrain", index))
            index += 1
            if rng.random() < 0.5:
                prompt, answer = CAPTION_PROMPT, noisy_caption(objects, rng, hallucination)
            else:
                prompt, answer = question(objects, rng, qa_hallucination)
            prompts.append(prompt)
            answers.append(answer)
            images.append(shapes.render(objects))
        loss = model(**encode(processor, prompts, answers, images)).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if step % 100 == 0:
            log(f"step {step} loss {loss.item():.4f} ({time.time() - start:.0f}s)")
        step += 1
    log(f"trained {step} steps on {index} scenes")
    model.eval()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="folder to write the model and processor to")
    parser.add_argument("--minutes", type=float, default=15.0, help="wall time of training")
    parser.add_argument("--hallucination", type=float, default=0.6,
                        help="how often a caption names the absent partner of a seen object")
    parser.add_argument("--qa-hallucination", type=float, default=0.55,
                        help="how often a question about an absent partner is answered yes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    processor = toy_processor()
    model = build_model(processor, args.seed)
    train(model, processor, args.minutes * 60, args.hallucination, args.qa_hallucination,
          lambda m: print(m, flush=True))
    Path(args.out).mkdir(parents=True, exist_ok=True)
    model.save_pretrained(args.out, safe_serialization=True)
    processor.save_pretrained(args.out)
    print(f"wrote {args.out}", flush=True)


if __name__ == "__main__":
    main()
