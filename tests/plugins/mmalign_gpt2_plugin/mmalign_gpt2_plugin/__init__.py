"""An mmalign modality for GPT-2: DPO on transformers' ``GPT2LMHeadModel``.

DPO (Rafailov et al. 2023, arXiv:2305.18290) scores a response by its log-likelihood given the
prompt, ``log pi(y | x) = sum_u log softmax(f(x, y_<u))[y_u]`` (eq. 7), over the response
tokens by the BOS / EOS rule of :mod:`mmalign.modalities.tokens`: GPT-2's tokenizer puts no BOS
before a text; the ``<|endoftext|>`` that ends a response (GPT-2's BOS and EOS at once) is
appended and scored. Layouts, forward, log-probs, truncation, records and export come from that
library; left here is GPT-2's own: a tiny config, a byte-level tokenizer, plain-text rows (no
chat template) and its LoRA targets.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from torch import nn
from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast

from mmalign.data.checks import RowChecks
from mmalign.errors import ConfigError, DataError
from mmalign.modalities.tokens.export import export_pretrained
from mmalign.modalities.tokens.fields import pair_fields, row_fields
from mmalign.modalities.tokens.options import TokenOptions, parse_options
from mmalign.modalities.tokens.records import read_records
from mmalign.modalities.tokens.responses import response_tokens
from mmalign.modalities.tokens.scoring import Wants, pair_surrogate, score_pairs
from mmalign.modalities.tokens.truncation import PromptTooLong, fit
from mmalign.modality import ModelSpec
from mmalign.surrogate import Batch, Draw, Surrogate

EOT = "<|endoftext|>"  # GPT-2's one special token: BOS, EOS and unknown token


def tiny_tokenizer() -> GPT2TokenizerFast:
    """GPT-2's byte-level BPE, no merges: a token per byte, then EOT (256); no pad, no BOS added."""
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    core = Tokenizer(models.BPE(vocab={symbol: i for i, symbol in enumerate(alphabet)}, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    core.add_special_tokens([EOT])
    return GPT2TokenizerFast(tokenizer_object=core, bos_token=EOT, eos_token=EOT, unk_token=EOT)


def tiny_gpt2(n_embd: int = 16, n_layer: int = 1, n_head: int = 2, n_positions: int = 512,
              seed: int = 0) -> GPT2LMHeadModel:
    """A random ``GPT2LMHeadModel`` for :func:`tiny_tokenizer`, in eval mode as ``from_pretrained``
    leaves one (GPT-2's dropout 0.1 stays in the config: the trainer switches it off)."""
    config = GPT2Config(vocab_size=257, n_positions=n_positions, n_embd=n_embd, n_layer=n_layer,
                        n_head=n_head, bos_token_id=256, eos_token_id=256)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return GPT2LMHeadModel(config).eval()


class GPT2Modality:
    """Plain-text preference pairs (prompt, chosen, rejected) for ``GPT2LMHeadModel``; options:
    the token library's (``max_length`` at most the model's ``n_positions``)."""

    Options = TokenOptions
    supported_needs = frozenset({"token_logps", "vocab_logps", "hidden"})
    policy_dependent_draw = False
    lora_target_modules = ("c_attn", "c_proj")  # transformers' Conv1D: peft sets fan_in_fan_out

    def __init__(self, **options: Any):
        self.options = parse_options(TokenOptions, options, "gpt2")
        self.tokenizer = None

    def load_policy(self, spec: ModelSpec) -> nn.Module:
        """A ``save_pretrained`` folder (model and tokenizer), or the builder ``tiny_gpt2``."""
        if spec.path:
            model = GPT2LMHeadModel.from_pretrained(spec.path, dtype=spec.dtype)
            self.tokenizer = AutoTokenizer.from_pretrained(spec.path)
        elif spec.builder == "tiny_gpt2":
            model, self.tokenizer = tiny_gpt2(**spec.builder_args).to(spec.dtype), tiny_tokenizer()
        else:
            raise ConfigError(f"unknown gpt2 builder {spec.builder!r}; give model.path or builder 'tiny_gpt2'")
        if self.options.max_length is None or self.options.max_length > model.config.n_positions:
            raise ConfigError(f"model.options.max_length ({self.options.max_length}) exceeds the model's "
                              f"{model.config.n_positions} positions; lower it")
        return model

    def load_records(self, path: str, schema: str | None = None, *,
                     checks: RowChecks | None = None) -> list[dict[str, Any]]:
        """Rows through the core's ``text:preference`` schema; every text must be a string."""
        def make(record: dict[str, Any], where, k: int, count: int) -> dict[str, Any]:
            for side in ("prompt", "chosen", "rejected"):
                if not isinstance(record.get(side), str):
                    raise where.error(side, "must be plain text", "GPT-2 has no chat template: give strings")
            return {**record, "sample_id": f"{Path(path).name}:{where.row}" + (f":{k}" if count > 1 else "")}

        return read_records(path, schema, guess=lambda row, where: "text:preference", make=make, checks=checks)

    def check_record(self, record: dict[str, Any]) -> None:
        self._encode(record)  # a prompt that leaves no room is named before training

    def collate(self, records: Sequence[dict[str, Any]]) -> Batch:
        """Ragged prompt / response ids; the changed-token and the rows' numeric fields."""
        encoded = [self._encode(r) for r in records]
        inputs = {key: [e[key] for e in encoded] for key in ("prompt_ids", "chosen_ids", "rejected_ids")}
        pad = self.tokenizer.eos_token_id  # GPT-2 has no pad token; padding is masked out anyway
        return Batch(inputs={**inputs, "pad_id": pad}, sample_id=[r["sample_id"] for r in records],
                     fields={**pair_fields(encoded), **row_fields(records)})

    def _encode(self, record: dict[str, Any]) -> dict[str, list[int]]:
        tok = self.tokenizer
        if tok is None:
            raise ConfigError("the gpt2 modality has no tokenizer yet: call load_policy first")
        responses = [response_tokens(tok(record[side]).input_ids, tok.bos_token_id, tok.eos_token_id)
                     for side in ("chosen", "rejected")]
        try:
            prompt, keep = fit(tok(record["prompt"]).input_ids, [len(r) for r in responses],
                               self.options.max_length, self.options.truncation)
        except PromptTooLong as exc:
            raise DataError(f"sample '{record['sample_id']}': {exc}", field="prompt",
                            hint="Raise model.options.max_length") from None
        return {"prompt_ids": prompt, "chosen_ids": responses[0][keep[0]], "rejected_ids": responses[1][keep[1]]}

    def draw(self, batch: Batch, seed: int, model: nn.Module | None) -> Draw:
        return Draw()  # an exact likelihood needs no randomness

    def draws_per_epoch(self, needs: frozenset[str]) -> bool:
        return False  # nor another one in another epoch

    def surrogate(self, model: nn.Module, batch: Batch, draw: Draw, needs: frozenset[str]) -> Surrogate:
        """Summed response-token log-probs, chosen and rejected in one forward (packed or ``2B`` rows)."""
        i = batch.inputs
        return pair_surrogate(*score_pairs(model, i["prompt_ids"], i["chosen_ids"], i["rejected_ids"], i["pad_id"],
                                           packed=self.options.packed, wants=Wants.of(needs)))

    def export(self, model: nn.Module, out_dir: str, card: str) -> list[str]:
        """A peft adapter folder (LoRA) or ``save_pretrained`` weights, with the tokenizer and card."""
        return export_pretrained(model, self.tokenizer, out_dir, card)

    @staticmethod
    def example(folder: str) -> dict[str, Any]:
        """The tiny GPT-2 and six pairs, each preferring a polite answer to a rude one."""
        rows = [{"prompt": f"Q{i}: may I have {thing}?\nA:", "chosen": f" Yes, here is {thing}.",
                 "rejected": " No."} for i, thing in enumerate(["tea", "a pen", "the salt", "help", "a map", "time"])]
        path = Path(folder) / "pairs.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        return {"spec": ModelSpec(builder="tiny_gpt2"), "data": str(path), "options": {"max_length": 64}}
