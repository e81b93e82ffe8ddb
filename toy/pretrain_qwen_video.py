"""Pretrain the toy video-language model of the moving-shapes world, from scratch, on a CPU.

    python -m mmalign.toy.pretrain_qwen_video --out assets/toy/qwen_video --minutes 28 --measure 400

Writes a transformers ``save_pretrained`` folder (``Qwen2_5_VLForConditionalGeneration`` in
safetensors plus its ``Qwen2_5_VLProcessor``) that the vision_language modality loads from
``model.path``. The model is Qwen2.5-VL-shaped (:func:`mmalign.models.qwen_vl.tiny_qwen25_vl_config`:
windowed vision tower, 2x2 patch merger, M-RoPE decoder) with a byte-level BPE tokenizer whose
merges are learned from this world's words, so each word is one token; the processor is
:func:`mmalign.models.qwen_vl.tiny_qwen25_vl_processor`'s (patch 8, temporal patch 2, merge 2:
an 8-frame 32x32 clip is 16 tokens).

It learns two tasks on clips of :mod:`mmalign.toy.shapes_video` (``pretrain`` seeds), read back
from H.264 exactly as the modality reads them:

* captions, ``Please describe this video in detail.`` -> ``a red circle moves left and a
  blue square moves up .``;
* direction questions, ``Which way does the red circle move? Answer left, right, up or
  down.`` -> ``left``.

The planted language prior: training clips move their class's favoured direction
(:data:`~mmalign.toy.shapes_video.PRIOR`) with probability ``--prior-share``, and a text about
an object moving another way still says the favoured direction with probability
``--prior-rate`` (captions) / ``--qa-prior-rate`` (questions). Decoding greedily, the model
answers the favoured direction on held-out clips that move against it.

:func:`measure` scores a saved folder on held-out clips through the vision_language modality.
The shipped checkpoint (the command above: 28 min on one thread, 4550 steps of 32 over 55,612
clips) measured on 400 held-out clips (directions uniform, 548 questions): caption object
accuracy 0.71 (95% 0.67-0.75); direction accuracy 0.24, that is 1.00 on the 131 objects moving
their favoured way and 0.00 on the 417 moving against it, where it says the favoured
direction every time. It does see motion: on the 62 such objects of 60 ``tune`` clips, its
next-token probability of the true direction (0.20 on average, against 0.71 for the favoured
one) beat the mean of the two other directions (0.05) 85% of the time, so the prior, not
blindness, makes it wrong.
"""
from __future__ import annotations

import argparse
import json
import math
import random
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import Qwen2_5_VLForConditionalGeneration, Qwen2Tokenizer
from transformers.video_utils import VideoMetadata

from mmalign.models import qwen_vl
from mmalign.toy import shapes, shapes_video as sv
from mmalign.toy.sft_batch import answer_batch

CAPTION_PROMPT, DIRECTION_QUESTION = sv.CAPTION_PROMPT, sv.DIRECTION_QUESTION
WORDS = ("a an the and moves move does which way answer or please describe this video in detail is there "
         "what where clip frame system user assistant You are helpful assistant . , ? "
         + " ".join(shapes.COLOURS) + " " + " ".join(shapes.SHAPES) + " " + " ".join(sv.DIRECTIONS)
         + " left, right, up down. move?").split()


def video_bpe(vocab_size: int = 640) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Byte-level BPE over this world's words (each alone and after a space, as byte-level BPE
    sees them differently) and the template's system turn: all 256 byte symbols first, so any
    text still encodes."""
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    texts = [f"{w} {w} {qwen_vl.DEFAULT_SYSTEM}" for w in WORDS]
    texts += [CAPTION_PROMPT, DIRECTION_QUESTION.format("red circle")] * 4
    core.train_from_iterator(texts, trainer)
    merges = [tuple(pair) if isinstance(pair, list) else tuple(pair.split(" ", 1))
              for pair in json.loads(core.to_str())["model"]["merges"]]
    return core.get_vocab(), merges


def video_tokenizer() -> Qwen2Tokenizer:
    """:func:`mmalign.models.qwen_vl.tiny_qwen_tokenizer` with :func:`video_bpe`'s vocabulary."""
    vocab, merges = video_bpe()
    for token in qwen_vl.SPECIAL_TOKENS:
        vocab[token] = len(vocab)
    tokenizer = Qwen2Tokenizer(
        vocab=vocab, merges=merges, unk_token=None, eos_token=qwen_vl.IM_END, pad_token=qwen_vl.PAD_TOKEN,
        extra_special_tokens={"image_token": qwen_vl.IMAGE_TOKEN, "video_token": qwen_vl.VIDEO_TOKEN,
                              "vision_bos_token": qwen_vl.VISION_START, "vision_eos_token": qwen_vl.VISION_END,
                              "im_start_token": qwen_vl.IM_START})
    tokenizer.chat_template = qwen_vl.CHAT_TEMPLATE
    return tokenizer


#: pixel normalisation of this world: the white background becomes 0, so a patch of background
#: embeds to 0 (the patch embedding has no bias) and only the shapes light up. With CLIP's
#: statistics (Qwen's default) white is about +2 in every channel: every token starts out
#: nearly the same large vector and the from-scratch vision tower was measured to stay blind
#: (captions constant after 500 steps)
PIXEL_MEAN, PIXEL_STD = [1.0, 1.0, 1.0], [0.5, 0.5, 0.5]


def video_processor():
    """The tiny Qwen2.5-VL processor (:func:`mmalign.models.qwen_vl.tiny_qwen25_vl_processor`'s
    sizes) with :func:`video_tokenizer` and this world's pixel normalisation."""
    from transformers import Qwen2VLImageProcessor, Qwen2VLVideoProcessor

    shared = dict(min_pixels=qwen_vl.MIN_PIXELS, max_pixels=qwen_vl.MAX_PIXELS, patch_size=qwen_vl.PATCH_SIZE,
                  temporal_patch_size=qwen_vl.TEMPORAL_PATCH_SIZE, merge_size=qwen_vl.MERGE_SIZE,
                  image_mean=PIXEL_MEAN, image_std=PIXEL_STD)
    base = qwen_vl.tiny_qwen25_vl_processor()
    return type(base)(image_processor=Qwen2VLImageProcessor(**shared), tokenizer=video_tokenizer(),
                      video_processor=Qwen2VLVideoProcessor(**shared, cap_pixels_per_frame=True,
                                                            do_sample_frames=False),
                      chat_template=qwen_vl.CHAT_TEMPLATE)


def build_model(processor, seed: int, hidden_size: int = 96, num_layers: int = 3, vision_hidden_size: int = 64,
                vision_layers: int = 2) -> Qwen2_5_VLForConditionalGeneration:
    tokenizer = processor.tokenizer
    config = qwen_vl.tiny_qwen25_vl_config(tokenizer, hidden_size, num_layers, vision_hidden_size, vision_layers)
    config._attn_implementation = "sdpa"
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = None
    return model


def decoded(frames: np.ndarray, folder: Path) -> torch.Tensor:
    """``frames`` after the H.264 round trip the modality's clips take (written, read back)."""
    from mmalign.modalities.video_io import read_clip, write_mp4

    path = folder / "clip.mp4"
    write_mp4(frames, path, fps=sv.FPS)
    return read_clip(path, num_frames=len(frames)).frames


def metadata(frames: int) -> VideoMetadata:
    """What the modality hands the processor for a clip read whole at :data:`~shapes_video.FPS`."""
    return VideoMetadata(total_num_frames=frames, fps=sv.FPS, frames_indices=list(range(frames)))


def encode(processor, prompts: list[str], answers: list[str], clips: list[torch.Tensor]) -> dict:
    """The supervised batch of ``prompts`` on ``clips`` answered by ``answers``, the clips timed as
    the modality times them (:func:`mmalign.toy.sft_batch.answer_batch`)."""
    return answer_batch(processor, "video", prompts, answers, videos=clips,
                        video_metadata=[metadata(len(c)) for c in clips])


def example(scene: sv.MovingScene, rng: random.Random, prior_rate: float, qa_prior_rate: float,
            caption_share: float = 0.5) -> tuple[str, str]:
    """A training prompt and answer about ``scene``: a noisy caption or a noisy direction answer."""
    if rng.random() < caption_share:
        return CAPTION_PROMPT, sv.caption(scene, [sv.noisy_direction(m, rng, prior_rate) for m in scene.objects])
    mover = rng.choice(scene.objects)
    return sv.direction_question(mover), sv.noisy_direction(mover, rng, qa_prior_rate)


def train(model, processor, seconds: float, prior_share: float, prior_rate: float, qa_prior_rate: float, log,
          batch_size: int = 32, frames: int = sv.FRAMES, lr: float = 2e-3, fresh: int = 12,
          pool_size: int = 4096, vision_lr_scale: float = 1.0) -> dict:
    rng = random.Random(0)
    vision = [p for n, p in model.named_parameters() if ".visual." in f".{n}"]
    rest = [p for n, p in model.named_parameters() if ".visual." not in f".{n}"]
    optimizer = torch.optim.AdamW([{"params": rest, "scale": 1.0}, {"params": vision, "scale": vision_lr_scale}],
                                  lr=lr, weight_decay=0.01)
    model.train()
    start, step, index = time.time(), 0, 0
    losses: list[float] = []
    pool: list = []
    with tempfile.TemporaryDirectory() as tmp:
        while time.time() - start < seconds:
            # the learning rate decays along a cosine over the wall-time budget
            progress = min((time.time() - start) / seconds, 1.0)
            factor = (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))) * min(1.0, (step + 1) / 50)
            for group in optimizer.param_groups:
                group["lr"] = group["scale"] * lr * factor
            # new clips join a rolling pool each step (decoding is as slow as a step); a batch
            # draws from the pool, so each clip is seen a few times, with fresh noisy texts
            for _ in range(fresh if pool else max(pool_size // 4, batch_size)):
                scene, pixels = sv.clip(shapes.seed_of("pretrain", index), frames, prior_share=prior_share)
                index += 1
                pool.append((scene, decoded(pixels, Path(tmp))))
            del pool[:-pool_size]
            prompts, answers, clips = [], [], []
            for scene, frames_read in rng.sample(pool, batch_size):
                prompt, answer = example(scene, rng, prior_rate, qa_prior_rate)
                prompts.append(prompt)
                answers.append(answer)
                clips.append(frames_read)
            loss = model(**encode(processor, prompts, answers, clips)).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            losses.append(loss.item())
            if step % 50 == 0:
                log(f"step {step} loss {np.mean(losses[-50:]):.4f} ({time.time() - start:.0f}s)")
            step += 1
    log(f"trained {step} steps on {index} clips in {time.time() - start:.0f}s")
    model.eval()
    return {"steps": step, "clips": index, "seconds": round(time.time() - start, 1)}


# -- measuring ---------------------------------------------------------------------------------
def wilson(successes: int, total: int, z: float = 1.96) -> list[float]:
    """The 95% Wilson score interval of a proportion."""
    if total == 0:
        return [0.0, 1.0]
    p = successes / total
    centre = (p + z * z / (2 * total)) / (1 + z * z / total)
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    return [round(max(0.0, centre - half), 4), round(min(1.0, centre + half), 4)]


def write_clips(out: Path, split: str, count: int, frames: int = sv.FRAMES, start: int = 0,
                prior_share: float = 0.25) -> list[dict]:
    """Clips ``start .. start + count`` of ``split`` as MP4 under ``out/split`` (directions
    uniform; with another ``prior_share``, under ``out/split_prior<share>``), with their annotations."""
    folder = out / (split if prior_share == 0.25 else f"{split}_prior{prior_share:g}")
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(start, start + count):
        scene = sv.moving_scene(shapes.seed_of(split, i), frames, prior_share=prior_share)
        path = folder / f"{i:05d}.mp4"
        if not path.exists():
            sv.write_clip(scene, path)
        rows.append({"video": str(path), "scene": scene, "index": i})
    return rows


def measure(modality, model, clips: list[dict]) -> dict:
    """Greedy captions and direction answers on ``clips`` (from :func:`write_clips`):

    * ``direction_accuracy``: direction questions answered with the true direction, over all
      objects; ``against_prior_accuracy`` / ``with_prior_accuracy`` over objects moving against /
      with their class's favoured direction; ``against_prior_says_prior``: how often an object
      moving against it is said to move the favoured way;
    * ``caption_object_accuracy``: captions naming exactly the clip's objects;
      ``caption_direction_accuracy``: named true objects given their true direction;
    * ``answer_words`` / ``caption_words``: mean length of the answers and captions.
    """
    prompts, owners = [], []
    for k, row in enumerate(clips):
        prompts.append({"prompt": CAPTION_PROMPT, "videos": [row["video"]]})
        owners.append((k, None))
        for mover in row["scene"].objects:
            prompts.append({"prompt": sv.direction_question(mover), "videos": [row["video"]]})
            owners.append((k, mover))
    said = [a[0] for a in modality.sample(model, prompts, 1, [0] * len(prompts))]
    right = {"all": [0, 0], "against": [0, 0], "with": [0, 0]}
    says_prior, answer_words, caption_words, correct = 0, [], [], []
    exact, named_right, named = 0, 0, 0
    captions, answers = [], []
    for (k, mover), text in zip(owners, said):
        scene = clips[k]["scene"]
        if mover is None:
            captions.append(text)
            caption_words.append(len(text.split()))
            parsed = sv.parse_caption(text)
            truth = {m.name: m.direction for m in scene.objects}
            exact += sorted(n for n, _ in parsed) == sorted(truth)
            for name, direction in parsed:
                if name in truth:
                    named += 1
                    named_right += direction == truth[name]
            continue
        answers.append(text)
        answer_words.append(len(text.split()))
        ok = sv.parse_direction(text) == mover.direction
        correct.append((k, int(ok)))
        for key in ("all", "against" if sv.against_prior(mover) else "with"):
            right[key][0] += ok
            right[key][1] += 1
        if sv.against_prior(mover):
            says_prior += sv.parse_direction(text) == mover.prior
    out = {}
    for key, name in (("all", "direction_accuracy"), ("against", "against_prior_accuracy"),
                      ("with", "with_prior_accuracy")):
        hits, total = right[key]
        out[name] = round(hits / max(total, 1), 4)
        out[name + "_ci95"] = wilson(hits, total)
        out[name.replace("accuracy", "questions")] = total
    out["against_prior_says_prior"] = round(says_prior / max(right["against"][1], 1), 4)
    out["caption_object_accuracy"] = round(exact / max(len(clips), 1), 4)
    out["caption_object_accuracy_ci95"] = wilson(exact, len(clips))
    out["caption_direction_accuracy"] = round(named_right / max(named, 1), 4)
    out["answer_words"] = round(float(np.mean(answer_words)), 3) if answer_words else 0.0
    out["caption_words"] = round(float(np.mean(caption_words)), 3) if caption_words else 0.0
    out["clips"] = len(clips)
    # (clip, answered right) per question, in clip order: for paired before / after comparisons
    out["direction_correct"] = correct
    out["examples"] = {"captions": captions[:8], "answers": answers[:8]}
    return out


def measure_folder(path: str, out: Path, split: str = "heldout", count: int = 200, frames: int = sv.FRAMES) -> dict:
    """:func:`measure` of the saved model at ``path`` on ``count`` clips of ``split``."""
    from mmalign.modality import ModelSpec
    from mmalign.registry import modalities

    modality = modalities.get("vision_language")(max_new_tokens=24, video_frames=frames)
    model = modality.load_policy(ModelSpec(path=str(path)))
    return measure(modality, model, write_clips(Path(out), split, count, frames))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="folder to write the model and processor to")
    parser.add_argument("--minutes", type=float, default=28.0, help="wall time of training")
    parser.add_argument("--prior-share", type=float, default=0.5,
                        help="how often a training clip moves its class's favoured direction")
    parser.add_argument("--prior-rate", type=float, default=0.6,
                        help="how often a caption says the favoured direction of an object moving against it")
    parser.add_argument("--qa-prior-rate", type=float, default=0.6,
                        help="how often a direction question about such an object is answered the favoured way")
    parser.add_argument("--frames", type=int, default=sv.FRAMES)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--vision-lr-scale", type=float, default=1.0,
                        help="the vision tower's learning rate as a multiple of --lr")
    parser.add_argument("--fresh", type=int, default=12, help="new clips joining the pool each step")
    parser.add_argument("--pool", type=int, default=4096, help="clips a batch is drawn from")
    parser.add_argument("--hidden-size", type=int, default=96)
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--vision-hidden-size", type=int, default=64)
    parser.add_argument("--vision-layers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--measure", type=int, default=0,
                        help="after saving, measure on this many held-out clips (written under OUT/../)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    processor = video_processor()
    model = build_model(processor, args.seed, args.hidden_size, args.layers, args.vision_hidden_size,
                        args.vision_layers)
    log = lambda m: print(m, flush=True)  # noqa: E731
    done = train(model, processor, args.minutes * 60, args.prior_share, args.prior_rate, args.qa_prior_rate, log,
                 args.batch_size, args.frames, args.lr, args.fresh, args.pool,
                 args.vision_lr_scale)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    model.save_pretrained(args.out, safe_serialization=True)
    processor.save_pretrained(args.out)
    log(f"wrote {args.out} ({json.dumps(done)})")
    if args.measure:
        with tempfile.TemporaryDirectory() as tmp:
            log(json.dumps(measure_folder(args.out, Path(tmp), "heldout", args.measure, args.frames), indent=1))


if __name__ == "__main__":
    main()
