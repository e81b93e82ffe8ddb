"""The ``lvlm_hallucination`` demo: DPO against object hallucination on the toy LLaVA.

The base model (``assets/toy/llava``) learned from captions that often name the usual partner
of a seen object even when it is absent, so its greedy captions hallucinate. Through
:func:`mmalign.toy.task.run`, the demo

1. samples several captions per image of the ``prefs`` scenes (temperature 1), scores each
   with the ``toy_caption_objects`` reward (objects named rightly minus twice those named
   wrongly, CHAIR's parser against the scene's annotations) and keeps best vs worst: the
   policy's own samples judged by a program, as RLAIF-V (Yu et al. 2024, arXiv:2405.17220)
   does with a model judge. Sampled answers to yes / no questions about present and absent
   objects, judged by the ``toy_yes_no`` reward, add pairs of the same kind;
2. trains with ``dpo`` plus RPO's NLL term on the chosen response (see :func:`objective`)
   on the ``vision_language`` modality, LoRA on the language model, through the ordinary
   trainer;
3. measures CHAIR_i / CHAIR_s (Rohrbach et al. 2018) of greedy captions and POPE F1 (Li et al.
   2023, adversarial negatives) on held-out scenes, before and after, with the vision_language
   modality's plain metric functions.

This module supplies the parts (:class:`mmalign.toy.task.Parts`); :data:`PRESETS` holds the
settings ``mmalign demo`` runs.
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw

from mmalign import config
from mmalign.modality import ModelSpec
from mmalign.registry import modalities
from mmalign.toy import checkpoints, shapes, task
from mmalign.toy.pretrain_llava import CAPTION_PROMPT, QUESTION
from mmalign.toy.rewards import VOCABULARY, CaptionObjects, YesNoTruth, best_vs_worst

NAME = "lvlm_hallucination"
SCALED = ("pair_images", "eval_images")


@dataclass(frozen=True)
class Settings:
    """The demo's knobs; learning rate, steps and ``sft_weight`` chosen on the ``tune`` seeds
    only: ``task.run(task_lvlm, dir, Settings(lr=...), split="tune")`` measures a candidate there."""

    pair_images: int = 256          # prefs scenes sampled for preference pairs
    samples_per_image: int = 4      # captions per image; the best and the worst make the pair
    eval_images: int = 240          # held-out scenes per arm (captions; POPE asks up to 6 each)
    pope_setting: str = "adversarial"
    steps: int = 160
    batch_size: int = 8
    beta: float = 0.1
    lr: float = 7e-4
    lora_r: int = 8
    sft_weight: float = 1.0         # RPO's NLL on the chosen response keeps captions complete
    probes_per_side: int = 2        # yes / no questions per prefs image: present and absent objects
    max_new_tokens: int = 24
    chunk: int = 1                  # samples per sample() call (the plugin generates prompt by prompt)


#: ``full``: run by ``mmalign demo --task all``; ``default``: run by ``mmalign demo`` with no
#: flag. The same: the whole task takes about a minute and a half on one CPU thread.
PRESETS = {"full": Settings(), "default": Settings()}


def write_scenes(out: Path, split: str, count: int) -> tuple[Path, list[list[str]]]:
    """Render ``count`` co-occurrence scenes of ``split`` as PNG and an annotation table
    ``{"image", "objects"}`` (the CHAIR / POPE evaluators' format)."""
    folder = out / split
    folder.mkdir(parents=True, exist_ok=True)
    rows, annotations = [], []
    for i in range(count):
        objects = shapes.paired_scene(shapes.seed_of(split, i))
        shapes.render(objects).save(folder / f"{i:04d}.png")
        rows.append({"image": f"{split}/{i:04d}.png", "objects": [o.name for o in objects]})
        annotations.append(rows[-1]["objects"])
    table = out / f"{split}.jsonl"
    table.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return table, annotations


def ask(modality, model, images: list[str], questions: list[str], n: int, seeds: list[int], s: Settings,
        desc: str, progress: bool) -> list[list[str]]:
    """``n`` answers per (image path, question), greedy when ``n == 1``, question ``i`` sampled
    from ``seeds[i]``."""
    prompts = [{"prompt": question, "images": [image]} for image, question in zip(images, questions)]
    return task.sample_all(modality, model, prompts, n, seeds, s.chunk, desc, progress)


def load(s: Settings):
    modality = modalities.get("vision_language")(max_new_tokens=s.max_new_tokens)
    return modality, modality.load_policy(ModelSpec(path=checkpoints.require(checkpoints.LLAVA)))


def measure(modality, model, out: Path, split: str, s: Settings, progress: bool, arm: str) -> dict:
    """CHAIR_i, CHAIR_s, coverage of greedy captions and POPE scores on ``split`` scenes."""
    from mmalign.modalities.vision_language.hallucination import chair, coverage, pope_questions, pope_scores
    from mmalign.modalities.vision_language.objects import load_vocabulary

    table, truths = write_scenes(out, split, s.eval_images)
    vocabulary = load_vocabulary(VOCABULARY)
    paths = [str(out / json.loads(line)["image"]) for line in table.read_text().splitlines()]
    seeds = [shapes.seed_of(split, i) for i in range(len(paths))]  # greedy: the seeds change nothing
    captions = [a[0] for a in ask(modality, model, paths, [CAPTION_PROMPT] * len(paths), 1, seeds, s,
                                  f"{NAME}: {arm} captions", progress)]
    questions = pope_questions(truths, vocabulary, s.pope_setting, per_image=3, seed=0)
    said = ask(modality, model, [paths[q["index"]] for q in questions], [QUESTION.format(q["object"]) for q in questions],
               1, [seeds[q["index"]] for q in questions], s, f"{NAME}: {arm} POPE", progress)
    scores = chair(captions, truths, vocabulary)
    pope = pope_scores([a[0] for a in said], [q["label"] for q in questions])
    return {"CHAIR_i": scores["CHAIR_i"], "CHAIR_s": scores["CHAIR_s"],
            "coverage": coverage(captions, truths, vocabulary), "POPE_F1": pope["f1"],
            "POPE_yes_ratio": pope["yes_ratio"], "captions": captions, "questions": len(questions)}


def make_pairs(modality, model, out: Path, s: Settings, progress: bool) -> list[dict]:
    """Best vs worst of each prefs image's sampled captions, and of its sampled answers to
    yes / no questions (:func:`probe_objects`), as ``rlaif_v`` rows. The questions keep
    what DPO on captions alone erodes: saying yes to what is there (POPE's recall)."""
    table, truths = write_scenes(out, "prefs", s.pair_images)
    paths = [str(out / json.loads(line)["image"]) for line in table.read_text().splitlines()]
    prompts, images, judges = [], [], []
    captions, answers = CaptionObjects(vocabulary=str(VOCABULARY)), YesNoTruth()
    for i, (path, truth) in enumerate(zip(paths, truths)):
        asked = [(CAPTION_PROMPT, lambda group, truth=truth: captions.score(group, [truth] * len(group)))]
        for name, label in probe_objects(truth, shapes.seed_of("prefs", i), s.probes_per_side):
            asked.append((QUESTION.format(name), lambda group, label=label: answers.score(group, [label] * len(group))))
        for prompt, judge in asked:
            prompts.append(prompt)
            images.append(path)
            judges.append(judge)
    seeds = [shapes.seed_of("prefs", i) for i in range(len(prompts))]
    groups = ask(modality, model, images, prompts, s.samples_per_image, seeds, s, f"{NAME}: preference pairs",
                 progress)
    rows = []
    for prompt, path, group, judge in zip(prompts, images, groups, judges):
        picked = best_vs_worst(judge(group).tolist())
        if picked is not None:
            rows.append({"image": str(Path(path).relative_to(out)), "question": prompt,
                         "chosen": group[picked[0]], "rejected": group[picked[1]]})
    return rows


def probe_objects(truth: list[str], seed: int, per_side: int) -> list[tuple[str, bool]]:
    """Up to ``per_side`` present objects (answer yes) and as many absent ones (answer no) of a
    scene; absent partners of its objects first, the co-occurrence POPE's adversarial split probes."""
    rng = random.Random(seed)
    partners = sorted({shapes.PARTNERS[n] for n in truth} - set(truth))
    others = [n for n in shapes.object_names() if n not in truth and n not in partners]
    present = rng.sample(truth, min(per_side, len(truth)))
    absent = (rng.sample(partners, len(partners)) + rng.sample(others, len(others)))[:len(present)]
    return [(n, True) for n in present] + [(n, False) for n in absent]


def recipe(table: Path, n_pairs: int, out: Path, s: Settings, progress: bool) -> config.Recipe:
    model = {"modality": "vision_language", "path": checkpoints.require(checkpoints.LLAVA),
             "lora": {"r": s.lora_r, "alpha": 2 * s.lora_r},
             "options": {"max_length": 96, "max_new_tokens": s.max_new_tokens}}
    return task.recipe(NAME, model, {"train": str(table), "schema": "rlaif_v"}, objective(s), s, n_pairs, out,
                       progress)


def objective(s: Settings) -> list[dict]:
    """DPO plus, as in RPO (Pang et al. 2024, arXiv:2404.19733), ``sft_weight`` times the
    chosen response's NLL: without it the cheapest way to stop naming absent partners is to
    stop naming anything, and captions shrink (measured as falling coverage)."""
    terms = [{"name": "dpo", "weight": 1.0, "params": {"beta": s.beta}}]
    if s.sft_weight:
        terms.append({"name": "sft", "weight": s.sft_weight, "params": {}})
    return terms


def caption_grid(out: Path, split: str, captions: list[str], path: Path, count: int = 12) -> None:
    """The first ``count`` scenes of ``split`` with their captions beneath, as one PNG."""
    cell_w, cell_h, scale = 200, 96, 2
    grid = Image.new("RGB", (cell_w * 3, cell_h * -(-count // 3)), "white")
    draw = ImageDraw.Draw(grid)
    for i, caption in enumerate(captions[:count]):
        x, y = (i % 3) * cell_w, (i // 3) * cell_h
        image = Image.open(out / split / f"{i:04d}.png").resize((shapes.SIZE * scale,) * 2, Image.NEAREST)
        grid.paste(image, (x + 4, y + 4))
        words, line, lines = caption.split(), "", []
        for word in words:  # wrap at about 30 characters
            if len(line) + len(word) > 30:
                lines.append(line)
                line = ""
            line = f"{line} {word}".strip()
        draw.multiline_text((x + 4, y + 8 + shapes.SIZE * scale), "\n".join([*lines, line][:3]), fill="black")
    grid.save(path)


def grid(out: Path, split: str, measured: dict, path: Path) -> None:
    caption_grid(out, split, measured["captions"], path)


def results(before: dict, after: dict, common: dict) -> list[dict]:
    """CHAIR_i, CHAIR_s, POPE F1 and coverage, each before and after."""
    common = dict(common, samples=len(after["captions"]))
    better = {"CHAIR_i": False, "CHAIR_s": False, "POPE_F1": True, "coverage": True}
    out = [dict(common, metric=m, before=before[m], after=after[m], higher_is_better=b) for m, b in better.items()]
    out[2]["samples"] = before["questions"]  # POPE counts its questions
    return out
