"""The ``text`` modality against TRL's ``DPOTrainer`` (trl 1.16): same tokens, same log-probs,
same DPO losses over five optimiser steps.

Both sides load one tiny Llama and its byte-level tokenizer from one ``save_pretrained``
folder, read the same 16 conversational preference rows in file order (no shuffle), and take
five AdamW steps (lr 1e-3, betas 0.9 / 0.999, eps 1e-8, no weight decay, constant schedule, no
warmup, gradient norm clipped at 1.0) on full fine-tuning with batches of 4, DPO sigmoid loss
with beta 0.1, and a frozen copy of the start weights as the reference. Dropout is off on both
(TRL ``disable_dropout=True``, mmalign ``model.disable_dropout``). mmalign has no plain SGD;
AdamW with the same hyperparameters is run on both sides (torch's AdamW in both: TRL's
``adamw_torch`` in two parameter groups, mmalign's foreach path in one, which do the same
element-wise update).

For each case this asserts:

* the token ids: mmalign's ``prompt_ids + chosen_ids`` / ``+ rejected_ids`` are TRL's, after
  TRL's own tokenisation (``_prepare_dataset``) and its collator's truncation;
* per-row summed log-probs of chosen and rejected at step 0 agree to 1e-5: mmalign's
  surrogate against TRL's own computation (its collator's concatenated ``[chosen; rejected]``
  batch through the fused LM head TRL patches onto the model, summed as ``_compute_loss`` sums
  them). The sums are about 45 in magnitude, where float32 values are 3.8e-6 apart: the two
  sides reduce in different orders (a ``[rows, response]`` tensor against a ``[rows, sequence]``
  one), so 1 to 2 units in the last place is what is measured, and 1e-5 is under 3;
* the five per-step losses agree to 1e-6 (measured: at most 1.8e-7, a few float32 units at 0.69).

Cases: a chat template that writes no BOS; the tiny tokenizer's own template, which opens with
``{{ bos_token }}`` (Llama-3 style: the BOS comes from the template only, no second one from the
tokenizer on either side); the same with ``max_length`` cutting responses (mmalign
``truncation: keep_start``, TRL's default ``keep_start``); and plain text, no template, where
both append the EOS to each response.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

pytest.importorskip("trl")

from mmalign import config  # noqa: E402
from mmalign.modalities.text import TextModality  # noqa: E402
from mmalign.modality import ModelSpec  # noqa: E402
from mmalign.models.text import CHAT_TEMPLATE, tiny_llama, tiny_tokenizer  # noqa: E402
from mmalign.train.run import train  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
ROWS, BATCH, STEPS, LR, BETA = 16, 4, 5, 1e-3, 0.1
LOGP_ATOL = 1e-5
LOSS_ATOL = 1e-6

NO_BOS_TEMPLATE = CHAT_TEMPLATE.replace("{{ bos_token }}", "")
assert NO_BOS_TEMPLATE != CHAT_TEMPLATE and CHAT_TEMPLATE.startswith("{{ bos_token }}")

#: case -> (chat template, rows as conversations, max_length)
CASES = {
    "template_without_bos": (NO_BOS_TEMPLATE, True, None),
    "template_with_bos": (CHAT_TEMPLATE, True, None),
    # prompts are 20..31 tokens, responses 4..8: 34 cuts the responses of the 30- and 31-token
    # prompts (their EOS too), never a prompt
    "template_with_bos_truncated": (CHAT_TEMPLATE, True, 34),
    "plain_text": (CHAT_TEMPLATE, False, None),
}


def _rows(chat: bool) -> list[dict]:
    lines = (ROOT / "assets/text_prefs/train.jsonl").read_text(encoding="utf-8").splitlines()[:ROWS]
    rows = [json.loads(line) for line in lines]
    if not chat:
        return [{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in rows]
    return [{"prompt": [{"role": "user", "content": r["prompt"]}],
             "chosen": [{"role": "assistant", "content": r["chosen"]}],
             "rejected": [{"role": "assistant", "content": r["rejected"]}]} for r in rows]


def _trl_side(folder: Path, rows: list[dict], max_length: int | None, out: Path):
    """TRL's tokens, step-0 log-probs (its own forward) and per-step losses."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, PrinterCallback
    from trl import DPOConfig, DPOTrainer

    losses: list[float] = []

    class Recording(DPOTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            loss = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            losses.append(loss.detach().item())
            return loss

    args = DPOConfig(
        output_dir=str(out), report_to=[], save_strategy="no", use_cpu=True, bf16=False, fp16=False,
        gradient_checkpointing=False, disable_dropout=True, seed=0, disable_tqdm=True, logging_steps=1,
        per_device_train_batch_size=BATCH, max_steps=STEPS, train_sampling_strategy="sequential",
        dataloader_num_workers=0, optim="adamw_torch", learning_rate=LR, weight_decay=0.0,
        adam_beta1=0.9, adam_beta2=0.999, adam_epsilon=1e-8, lr_scheduler_type="constant", warmup_steps=0,
        max_grad_norm=1.0, beta=BETA, loss_type="sigmoid", max_length=max_length, truncation_mode="keep_start",
        precompute_ref_log_probs=False)
    policy = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    reference = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    trainer = Recording(model=policy, ref_model=reference, args=args, train_dataset=Dataset.from_list(rows),
                        processing_class=AutoTokenizer.from_pretrained(folder))
    trainer.remove_callback(PrinterCallback)  # the losses are recorded above, not read from its log lines
    examples = [trainer.train_dataset[i] for i in range(len(rows))]
    assert len(examples) == len(rows), "TRL dropped rows (a prompt as long as max_length)"

    # step 0, as DPOTrainer._compute_loss computes it: [chosen; rejected] rows, completion
    # tokens as labels, the fused LM head's per-token log-probs summed over each row
    inputs = trainer.data_collator(examples)
    labels = inputs["input_ids"].masked_fill(inputs["completion_mask"] == 0, -100)
    with torch.no_grad():
        out = trainer.model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                            labels=labels, fused_lm_head=True, use_cache=False)
    seq_len = inputs["completion_mask"].shape[1] - 1
    chosen, rejected = out.log_probs[:, -seq_len:].sum(dim=1).chunk(2, dim=0)

    def cut(ids: list[int]) -> list[int]:  # the collator's keep_start truncation
        return ids if max_length is None else ids[:max_length]

    sequences = {side: [cut(e["prompt_ids"] + e[f"{side}_ids"]) for e in examples] for side in ("chosen", "rejected")}
    trainer.train()
    return sequences, chosen, rejected, losses


def _mmalign_side(folder: Path, data: Path, chat: bool, max_length: int | None, out: Path):
    """mmalign's tokens, step-0 surrogate and per-step losses (``mmalign train``'s loop)."""
    options = {"chat_template": chat, "max_length": max_length, "truncation": "keep_start"}
    modality = TextModality(**options)
    policy = modality.load_policy(ModelSpec(path=str(folder)))
    batch = modality.collate(modality.load_records(str(data)))
    with torch.no_grad():
        surrogate = modality.surrogate(policy, batch, modality.draw(batch, 0, policy), frozenset({"token_logps"}))
    inputs = batch.inputs
    sequences = {side: [p + r for p, r in zip(inputs["prompt_ids"], inputs[f"{side}_ids"])]
                 for side in ("chosen", "rejected")}

    recipe = config.from_dict({
        "model": {"modality": "text", "path": str(folder), "options": options, "disable_dropout": True},
        "data": {"train": str(data), "schema": "preference"},
        "objective": {"name": "dpo", "params": {"beta": BETA}},
        "reference": {"strategy": "copy"},
        "train": {"seed": 0, "batch_size": BATCH, "max_steps": STEPS, "shuffle": False, "cpu": True,
                  "optimizer": "adamw", "lr": LR, "weight_decay": 0.0, "scheduler": "constant", "warmup_steps": 0,
                  "max_grad_norm": 1.0},
        "eval": {"every": 0},
        "logging": {"output_dir": str(out), "every": 1, "tensorboard": False, "progress": False},
    }, source="<trl equivalence>")
    session = train(recipe)
    losses = [h["loss"] for h in session.history if "loss" in h]
    return sequences, surrogate.chosen, surrogate.rejected, losses


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_matches_trl_dpo_trainer(case, tmp_path, one_thread):
    template, chat, max_length = CASES[case]
    folder = tmp_path / "model"
    tokenizer = tiny_tokenizer()
    tokenizer.chat_template = template
    tiny_llama().save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    rows = _rows(chat)
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")

    trl_ids, trl_chosen, trl_rejected, trl_losses = _trl_side(folder, rows, max_length, tmp_path / "trl")
    mm_ids, mm_chosen, mm_rejected, mm_losses = _mmalign_side(folder, data, chat, max_length, tmp_path / "mm")

    bos = tokenizer.bos_token_id
    opens_with_bos = template.startswith("{{ bos_token }}") and chat
    for side in ("chosen", "rejected"):
        assert mm_ids[side] == trl_ids[side], f"{side} token ids differ"
        # one BOS exactly where the template writes it, never a second one
        assert all(ids.count(bos) == int(opens_with_bos) for ids in mm_ids[side])
        assert all((ids[0] == bos) == opens_with_bos for ids in mm_ids[side])
    if max_length is not None:
        assert max(map(len, mm_ids["chosen"])) == max_length  # the truncation case cuts something

    gaps = {"chosen": (mm_chosen - trl_chosen).abs().max().item(),
            "rejected": (mm_rejected - trl_rejected).abs().max().item()}
    assert max(gaps.values()) <= LOGP_ATOL, f"step-0 log-prob gaps {gaps}"

    assert len(mm_losses) == len(trl_losses) == STEPS
    loss_gaps = [abs(a - b) for a, b in zip(mm_losses, trl_losses)]
    print(f"\n{case}: step-0 logp gaps {gaps}, loss gaps {loss_gaps}, losses {mm_losses}")
    assert max(loss_gaps) <= LOSS_ATOL, f"losses mmalign {mm_losses} TRL {trl_losses}"
    # the comparison is not of five identical numbers: training moved the loss off log 2
    assert abs(mm_losses[0] - 0.6931472) < 1e-6 and mm_losses[-1] < mm_losses[0] - 0.02
