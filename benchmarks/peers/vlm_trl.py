"""Seconds per DPO step of mmalign and of TRL's ``DPOTrainer`` (trl 1.16) on the same tiny
LLaVA and the same 64 preference pairs with images, in interleaved repetitions.

    python benchmarks/peers/vlm_trl.py [--repeats 5] [--steps 48] [--batch 4] [--threads 2]

Both sides load one ``save_pretrained`` folder (the ``tiny_llava`` builder's model and
processor), read the same 64 rows in file order (no shuffle: 16 steps are one epoch at batch
4; a run takes 48, three epochs, so that each repetition's median has 47 intervals on a
machine others share) and train with the same batch size, DPO sigmoid loss (beta 0.1), AdamW
(the same ``torch.optim.AdamW`` call on both: foreach on a CPU, fused on CUDA, lr 1e-4, no
weight decay, constant schedule), gradient clipping at 1.0, dropout off, no gradient
checkpointing, ``torch.set_num_threads(--threads)`` and a metrics line every step. The
fixture's chat template opens with ``{{ bos_token }}``, so both sides see the very same token
ids (checked before anything is timed). Arms:

* ``mmalign_copy`` / ``trl_copy``: full fine-tuning against a frozen copy of the start weights;
* ``mmalign_lora`` / ``trl_lora``: LoRA (r 8, alpha 16, the language model's q/k/v/o
  projections) with the adapters switched off as the reference (TRL: ``peft_config``);
* ``mmalign_precomputed``: the LoRA run with the reference log-probs computed in one pass
  before training (TRL refuses ``precompute_ref_log_probs`` for vision datasets, so it is
  compared with TRL's live LoRA reference), per step and amortised over one epoch with the
  precompute pass included: ``(pass + 16 x step) / 16``.

A step's time is the median interval between step ends (see ``peer_timing``): TRL's via a
``TrainerCallback.on_step_end``, mmalign's via an accelerate tracker its trainer logs to once
per step. Writes benchmarks/results/peers_vlm_trl.json (``--out`` elsewhere): per ratio the
ratio of medians, the median and min-max of the per-repetition ratios (targets are read on
their median), and the same for each run's fastest step.
"""
from __future__ import annotations

import os

# Read by the OpenMP runtime when torch loads, so set before it. On a machine whose cores
# other work also uses, OpenMP workers that spin while they wait stall on a peer the scheduler
# has put aside: two threads ran 20-30x slower than one here. Waiting passively keeps the
# two-thread numbers about the work. A value already in the environment wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import json
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import peer_timing  # noqa: E402

PAIRS = 64
BETA = 0.1
LR = 1e-4
LORA = {"r": 8, "alpha": 16}
#: pairs per forward of mmalign's precompute pass (``eval.batch_size``; training batches stay
#: ``--batch``): without gradients or stored activations a pass can read more pairs at once
PRECOMPUTE_BATCH = 32
#: ratio targets: mmalign's seconds per step over TRL's
TARGETS = {"frozen_copy": 0.60, "lora": 0.55, "precomputed_per_step": 0.45, "precomputed_amortised": 0.45}
COLOURS = {"red": (220, 20, 20), "blue": (20, 40, 220), "green": (20, 200, 40), "yellow": (230, 220, 20)}
QUESTIONS = ("what color is the image ?", "describe the picture briefly .", "what is in the image ?",
             "what do you see in the photo ?")
SIDES = ("left", "right", "top", "bottom")


@dataclass
class Fixture:
    """One model folder and one data file, read by both sides."""

    model: str  # save_pretrained folder: weights, config, processor
    data: str   # RLAIF-V JSONL (image path, question, chosen, rejected)
    rows: list[dict] = field(default_factory=list)  # the same rows as TRL reads them
    builder_args: dict = field(default_factory=dict)


def _image(i: int, size: int = 48):
    """Pair ``i``'s image: a flat colour with a patch of another colour on one side."""
    from PIL import Image

    names = list(COLOURS)
    image = Image.new("RGB", (size, size), COLOURS[names[i % 4]])
    patch = Image.new("RGB", (size // 2, size // 2), COLOURS[names[(i // 4 + 1 + i) % 4]])
    corner = [(0, size // 4), (size // 2, size // 4), (size // 4, 0), (size // 4, size // 2)][(i // 16) % 4]
    image.paste(patch, corner)
    return image


def _answers(i: int) -> tuple[str, str]:
    """Chosen and rejected answers of pair ``i`` (words of the tiny tokenizer's vocabulary),
    of a few lengths, so batches are ragged as real ones are."""
    names = list(COLOURS)
    colour, other, patch = names[i % 4], names[(i + 1) % 4], names[(i // 4 + 1 + i) % 4]
    side = SIDES[(i // 16) % 4]
    if i % 3 == 0:
        return f"the image is {colour} .", f"the image is {other} ."
    if i % 3 == 1:
        return (f"a {colour} image with a small {patch} area on the {side} side .",
                f"a {other} image with a small {colour} area on the {side} side .")
    return (f"it shows a {colour} background and a {patch} area at the {side} .",
            f"it shows a {patch} background .")


def make_fixture(folder: Path, pairs: int = PAIRS, builder_args: dict | None = None) -> Fixture:
    """The tiny LLaVA (``tiny_llava_parts(**builder_args)``) saved with ``save_pretrained``, and
    ``pairs`` preference pairs with images, as mmalign's JSONL and as TRL's conversational rows."""
    from PIL import Image

    from mmalign.models.llava import CHAT_TEMPLATE, tiny_llava_parts

    builder_args = dict(builder_args or {})
    parts = tiny_llava_parts(**builder_args)
    # The BOS from the template on both sides: TRL's vision collator tokenises with
    # add_special_tokens=False, mmalign takes a template's BOS instead of the tokenizer's.
    template = "{{ bos_token }}" + CHAT_TEMPLATE
    parts.processor.chat_template = template
    parts.processor.tokenizer.chat_template = template
    model_dir = folder / "model"
    parts.model.save_pretrained(model_dir)
    parts.processor.save_pretrained(model_dir)

    images = folder / "images"
    images.mkdir(parents=True, exist_ok=True)
    lines, rows = [], []
    for i in range(pairs):
        path = images / f"pair{i:03d}.png"
        _image(i).save(path)
        chosen, rejected = _answers(i)
        question = QUESTIONS[i % len(QUESTIONS)]
        lines.append(json.dumps({"image": str(path), "question": question, "chosen": chosen, "rejected": rejected}))
        rows.append({"images": [Image.open(path).convert("RGB")],
                     "prompt": [{"role": "user", "content": question}],
                     "chosen": [{"role": "assistant", "content": chosen}],
                     "rejected": [{"role": "assistant", "content": rejected}]})
    data = folder / "pairs.jsonl"
    data.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return Fixture(str(model_dir), str(data), rows, builder_args)


def check_same_tokens(fx: Fixture) -> int:
    """Assert that TRL's vision collator and mmalign's records give every pair the same
    ``prompt + chosen`` and ``prompt + rejected`` ids; returns the number of pairs checked."""
    from transformers import AutoProcessor
    from trl.trainer.dpo_trainer import DataCollatorForVisionPreference

    from mmalign.modalities.vision_language import VisionLanguageModality
    from mmalign.modality import ModelSpec

    collator = DataCollatorForVisionPreference(processor=AutoProcessor.from_pretrained(fx.model))
    batch = collator([dict(r) for r in fx.rows])
    trl_ids = [ids[mask.bool()].tolist() for ids, mask in zip(batch["input_ids"], batch["attention_mask"])]
    modality = VisionLanguageModality(max_length=None)
    modality.load_policy(ModelSpec(path=fx.model))
    records = modality.load_records(fx.data, "rlaif_v")
    ours = ([r["prompt_ids"] + r["chosen_ids"] for r in records]
            + [r["prompt_ids"] + r["rejected_ids"] for r in records])
    assert len(ours) == len(trl_ids) == 2 * len(fx.rows)
    for k, (a, b) in enumerate(zip(ours, trl_ids)):
        assert a == b, f"sequence {k}: mmalign {a} != TRL {b}"
    return len(records)


# -- mmalign ------------------------------------------------------------------------------

REFERENCES = {"copy": {"strategy": "copy"},
              "lora": {"strategy": "adapters_off"},
              "precomputed": {"strategy": "precomputed", "precompute_with": "adapters_off"}}


def mmalign_recipe(fx: Fixture, arm: str, steps: int, batch: int, out: str, device: str) -> dict:
    """mmalign's recipe for ``arm`` (a key of :data:`REFERENCES`)."""
    return {
        "model": {"modality": "vision_language", "path": fx.model, "disable_dropout": True,
                  "lora": None if arm == "copy" else {**LORA, "dropout": 0.0},
                  "options": {"max_length": None, "packed": True}},
        "data": {"train": fx.data, "schema": "rlaif_v"},
        "objective": {"name": "dpo", "params": {"beta": BETA}},
        "reference": REFERENCES[arm],
        "train": {"seed": 0, "batch_size": batch, "max_steps": steps, "shuffle": False, "cpu": device == "cpu",
                  "optimizer": "adamw", "lr": LR, "weight_decay": 0.0, "scheduler": "constant",
                  "max_grad_norm": 1.0, "mixed_precision": "bf16" if device == "cuda" else "no"},
        # the precompute pass is a forward without gradient: it reads PRECOMPUTE_BATCH pairs at a time
        "eval": {"every": 0, **({"batch_size": PRECOMPUTE_BATCH} if arm == "precomputed" else {})},
        "logging": {"output_dir": out, "every": 1, "tensorboard": False, "progress": False},
    }


def run_mmalign(fx: Fixture, arm: str, steps: int, batch: int, device: str) -> dict:
    """One mmalign run: its step end times, the precompute pass's seconds (0 without one) and
    its losses."""
    with tempfile.TemporaryDirectory() as tmp:
        raw = mmalign_recipe(fx, arm, steps, batch, str(Path(tmp) / "run"), device)
        session, ends = peer_timing.mmalign_session(raw, f"<peers vlm {arm}>", device)
    assert len(ends) == steps, f"mmalign {arm}: {len(ends)} step ends for {steps} steps"
    return {"ends": ends, "precompute_seconds": session.seconds.get("precompute", 0.0),
            "losses": [h["loss"] for h in session.history if "loss" in h]}


# -- TRL ----------------------------------------------------------------------------------

def run_trl(fx: Fixture, lora: bool, steps: int, batch: int, device: str) -> dict:
    """One TRL ``DPOTrainer`` run (frozen copy, or LoRA with adapters off): its step end times
    and its losses."""
    from accelerate.state import AcceleratorState
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForImageTextToText, AutoProcessor, PrinterCallback, TrainerCallback
    from trl import DPOConfig, DPOTrainer

    from mmalign.modalities.vision_language import LORA_TARGETS
    from mmalign.train.optim import make_optimizer

    ends: list[float] = []

    class StepEnds(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            ends.append(time.perf_counter())

    class SameOptimizer(DPOTrainer):
        """TRL with the AdamW call mmalign makes, so the optimiser is not a difference."""

        def create_optimizer(self, model=None):
            if self.optimizer is None:
                params = [p for p in (model or self.model).parameters() if p.requires_grad]
                self.optimizer = make_optimizer(params, "adamw", LR, 0.0)
            return self.optimizer

    AcceleratorState._reset_state(reset_partial_state=False)
    dtype = torch.float32
    with tempfile.TemporaryDirectory() as tmp:
        args = DPOConfig(
            output_dir=tmp, report_to=[], save_strategy="no", use_cpu=device == "cpu", bf16=device == "cuda",
            fp16=False, gradient_checkpointing=False, disable_dropout=True, seed=0, disable_tqdm=True,
            logging_steps=1, per_device_train_batch_size=batch, max_steps=steps, train_sampling_strategy="sequential",
            dataloader_num_workers=0, learning_rate=LR, weight_decay=0.0, lr_scheduler_type="constant",
            warmup_steps=0, max_grad_norm=1.0, beta=BETA, loss_type="sigmoid", max_length=None,
            precompute_ref_log_probs=False)
        policy = AutoModelForImageTextToText.from_pretrained(fx.model, dtype=dtype)
        reference = None if lora else AutoModelForImageTextToText.from_pretrained(fx.model, dtype=dtype)
        peft_config = LoraConfig(r=LORA["r"], lora_alpha=LORA["alpha"], lora_dropout=0.0,
                                 target_modules=LORA_TARGETS) if lora else None
        trainer = SameOptimizer(model=policy, ref_model=reference, args=args, peft_config=peft_config,
                                train_dataset=Dataset.from_list(fx.rows),
                                processing_class=AutoProcessor.from_pretrained(fx.model), callbacks=[StepEnds()])
        trainer.remove_callback(PrinterCallback)  # no stdout per step; its log history is kept
        trainer.train()
        losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(ends) == steps, f"TRL: {len(ends)} step ends for {steps} steps"
    return {"ends": ends, "losses": losses}


# -- the comparison ------------------------------------------------------------------------

def arms(fx: Fixture, steps: int, batch: int, device: str, extra: dict[str, list]) -> dict:
    """The five arms as ``name -> (repetition -> step end times)``; each mmalign precompute
    pass's seconds are appended to ``extra["precompute_seconds"]``."""
    def mm(arm: str):
        def one(rep: int) -> list[float]:
            out = run_mmalign(fx, arm, steps, batch, device)
            if arm == "precomputed":
                extra["precompute_seconds"].append(out["precompute_seconds"])
            extra[f"first_loss_mmalign_{arm}"].append(out["losses"][0])
            return out["ends"]
        return one

    def trl(lora: bool):
        def one(rep: int) -> list[float]:
            out = run_trl(fx, lora, steps, batch, device)
            extra[f"first_loss_trl_{'lora' if lora else 'copy'}"].append(out["losses"][0])
            return out["ends"]
        return one

    return {"mmalign_copy": mm("copy"), "trl_copy": trl(False), "mmalign_lora": mm("lora"),
            "trl_lora": trl(True), "mmalign_precomputed": mm("precomputed")}


def compare(fx: Fixture, repeats: int, steps: int, batch: int, threads: int, device: str) -> dict:
    """Every arm ``repeats`` times, interleaved, and the four ratios with their targets."""
    load_before = os.getloadavg()
    torch.set_num_threads(threads)
    pairs = check_same_tokens(fx)
    extra: dict[str, list] = {"precompute_seconds": []}
    for key in ("mmalign_copy", "mmalign_lora", "mmalign_precomputed", "trl_copy", "trl_lora"):
        extra[f"first_loss_{key}"] = []
    stats = peer_timing.interleaved(arms(fx, steps, batch, device, extra), repeats)
    per_rep = stats["median"]
    steps_per_epoch = -(-pairs // batch)

    def amortised(per_step: list[float]) -> list[float]:
        return [(pre + steps_per_epoch * s) / steps_per_epoch for pre, s in zip(extra["precompute_seconds"], per_step)]

    def ratios(times: dict[str, list[float]], targets: dict[str, float | None]) -> dict:
        return {
            "frozen_copy": peer_timing.ratio(times["mmalign_copy"], times["trl_copy"], targets["frozen_copy"]),
            "lora": peer_timing.ratio(times["mmalign_lora"], times["trl_lora"], targets["lora"]),
            "precomputed_per_step": peer_timing.ratio(times["mmalign_precomputed"], times["trl_lora"],
                                                      targets["precomputed_per_step"]),
            "precomputed_amortised": peer_timing.ratio(amortised(times["mmalign_precomputed"]), times["trl_lora"],
                                                       targets["precomputed_amortised"]),
        }
    first_losses = {k.removeprefix("first_loss_"): v for k, v in extra.items() if k.startswith("first_loss_")}
    return {
        "what": "seconds per DPO step, mmalign / TRL DPOTrainer, same tiny LLaVA, same pairs and tokens",
        "device": device, "threads": threads, "repeats": repeats, "steps": steps, "batch_size": batch,
        "pairs": pairs, "steps_per_epoch": steps_per_epoch, "same_token_ids": True,
        "precompute_batch": PRECOMPUTE_BATCH,
        "model": {"builder": "tiny_llava", "builder_args": fx.builder_args},
        "lora": {**LORA, "dropout": 0.0, "targets": "language model q/k/v/o projections"},
        "optimizer": "torch.optim.AdamW (lr 1e-4, no weight decay), foreach on CPU / fused on CUDA, on both sides",
        "statistic": "per repetition: median interval between step ends (first step excluded); "
                     "across repetitions: median, min-max; fastest_step_*: the shortest interval instead",
        "seconds_per_step": per_rep,
        "median": {k: peer_timing.spread(v)["median"] for k, v in per_rep.items()},
        "min_max": {k: peer_timing.spread(v)["min_max"] for k, v in per_rep.items()},
        "precompute_pass_seconds": extra["precompute_seconds"],
        "mmalign_precomputed_amortised_seconds_per_step": amortised(per_rep["mmalign_precomputed"]),
        "first_step_loss": first_losses,
        "ratios": ratios(per_rep, TARGETS),
        "fastest_step_seconds": stats["fastest"],
        "fastest_step_ratios": ratios(stats["fastest"], dict.fromkeys(TARGETS)),
        "environment": peer_timing.environment(load_before),
        "versions": peer_timing.versions(),
    }


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--steps", type=int, default=48, help="steps per run (16 = one epoch of 64 pairs at batch 4)")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--pairs", type=int, default=PAIRS)
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--builder-args", type=json.loads, default={}, help="JSON keyword arguments of tiny_llava_parts")
    ap.add_argument("--out", default=None, help="JSON path (default benchmarks/results/peers_vlm_trl.json)")
    return ap


def main(argv: list[str] | None = None) -> dict:
    args = parser().parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        fx = make_fixture(Path(tmp), args.pairs, args.builder_args)
        result = compare(fx, args.repeats, args.steps, args.batch, args.threads, args.device)
    path = peer_timing.write(result, "peers_vlm_trl.json", args.out)
    print(json.dumps({k: {m: v[m] for m in ("median_ratio", "median_of_ratios", "min_max", "target", "met")}
                      for k, v in result["ratios"].items()}, indent=1))
    print(f"wrote {path}")
    return result


if __name__ == "__main__":
    main()
