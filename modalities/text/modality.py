"""The ``text`` modality: causal language models scored by their response-token log-probs.

The surrogate is the exact log-likelihood of the response given the prompt (Rafailov et al.
2023, eq. 7 uses it directly)::

    log pi(y | x) = sum_{u < |y|} log softmax(f(x, y_<u))[y_u]

over the response tokens by the one BOS / EOS rule of :mod:`mmalign.modalities.tokens`.
Chosen and rejected responses of a batch run in one forward pass: ``2B`` stacked rows (chosen
first), or with ``packed: true`` one ``[prompt | chosen | rejected]`` row per pair. Token
models need no randomness, so ``draw`` is empty.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from pydantic import Field, StrictBool, StrictInt, model_validator
from torch import Tensor, nn

from mmalign.data.checks import RowChecks
from mmalign.errors import ConfigError, DataError
from mmalign.modalities.text.example import example
from mmalign.modalities.text import encoding, loading, records
from mmalign.modalities.tokens.export import export_pretrained
from mmalign.modalities.tokens.fields import pair_fields, row_fields
from mmalign.modalities.tokens.forward import device_of
from mmalign.modalities.tokens.options import TokenOptions, parse_options
from mmalign.modalities.tokens.sampling import evaluating, new_tokens, refuse_init
from mmalign.modalities.tokens.records import is_paired, mismatched
from mmalign.modalities.tokens.scoring import (Wants, kl_mismatched, pair_surrogate, score_pairs, score_responses,
                                               unpaired_surrogate)
from mmalign.modality import ModelSpec, normalize_seeds
from mmalign.surrogate import Batch, Draw, Surrogate

#: needs only unpaired rows (KTO) can fill
UNPAIRED_NEEDS = frozenset({"label", "terms:kl_mismatched"})


class TextOptions(TokenOptions):
    """:class:`~mmalign.modalities.tokens.options.TokenOptions`, and:

    * ``max_prompt_length``: when set, longer prompts keep their last tokens (those nearest
      the response, as TRL does); otherwise a prompt that leaves no room for a response is an error;
    * ``chat_template``: render rows with the tokenizer's chat template (string prompts become
      one user message, string responses one assistant message); when false, prompt and
      response are concatenated as they are and an end-of-sequence token closes the response.
    """

    max_prompt_length: StrictInt | None = Field(None, ge=1)
    chat_template: StrictBool = True

    @model_validator(mode="after")
    def _prompt_leaves_room(self) -> "TextOptions":
        if None not in (self.max_prompt_length, self.max_length) and self.max_prompt_length >= self.max_length:
            raise ValueError(f"max_prompt_length ({self.max_prompt_length}) must be smaller than max_length "
                             f"({self.max_length}) to leave room for the response")
        return self


class TextModality:
    """Preference data over text, for ``transformers`` causal language models (options:
    :class:`TextOptions`)."""

    Options = TextOptions
    supported_needs = frozenset({"token_logps", "vocab_logps", "hidden", "label", "terms:kl_mismatched"})
    policy_dependent_draw = False
    lora_target_modules = ("q_proj", "k_proj", "v_proj", "o_proj")

    def __init__(self, **options: Any):
        self.options = parse_options(TextOptions, options, "text")
        self.tokenizer = None

    # -- model -----------------------------------------------------------------------------
    def load_policy(self, spec: ModelSpec) -> nn.Module:
        """A causal LM from a local folder (model and tokenizer) or a ``models.text`` builder."""
        model, self.tokenizer = loading.load(spec, self.options.chat_template)
        return model

    # -- data ------------------------------------------------------------------------------
    def load_records(self, path: str, schema: str | None = None, *,
                     checks: RowChecks | None = None) -> list[dict[str, Any]]:
        """Rows of a local file as records (:func:`mmalign.modalities.text.records.load_records`)."""
        return records.load_records(path, schema, checks, self.options.chat_template)

    def check_record(self, record: dict[str, Any]) -> None:
        """Tokenise a record's prompt and responses once the tokenizer is loaded, so a prompt
        that leaves no room for a response is named before training, not at its batch."""
        self._encode(record, [record[s] for s in ("chosen", "rejected", "completion") if s in record])

    def collate(self, records: Sequence[dict[str, Any]]) -> Batch:
        """Tokenise rows into ragged prompt and response ids (laid out by the surrogate).

        Paired rows give chosen and rejected ids and the changed-token fields. Unpaired rows
        give completions, labels, and the mismatched completions KTO's KL estimate uses: prompt
        ``i`` with completion ``i + 1`` (cyclically; a batch of one row pairs the row with
        itself, which makes that estimate the matched log-likelihood, so use two or more).
        """
        if not records:
            raise DataError("cannot collate an empty list of records")
        paired = is_paired(records)
        inputs = self._pairs(records) if paired else self._unpaired(records)
        fields = {**(pair_fields(_sides(inputs)) if paired else {}), **row_fields(records)}
        return Batch(inputs={**inputs, "paired": paired, "pad_id": _pad_id(self._require_tokenizer())},
                     sample_id=[_sample_id(r) for r in records], fields=fields)

    def _pairs(self, records: Sequence[dict[str, Any]]) -> dict[str, Any]:
        encoded = [self._encode(r, [r["chosen"], r["rejected"]]) for r in records]
        return {"prompt_ids": [e["prompt_ids"] for e in encoded],
                "chosen_ids": [e["response_ids"][0] for e in encoded],
                "rejected_ids": [e["response_ids"][1] for e in encoded]}

    def _unpaired(self, records: Sequence[dict[str, Any]]) -> dict[str, Any]:
        encoded = [self._encode(r, [r["completion"], other]) for r, other in zip(records, mismatched(records))]
        return {"prompt_ids": [e["prompt_ids"] for e in encoded],
                "completion_ids": [e["response_ids"][0] for e in encoded],
                "mismatched_ids": [e["response_ids"][1] for e in encoded],
                "label": torch.tensor([bool(r["label"]) for r in records])}

    def draw(self, batch: Batch, seed: int, model: nn.Module | None = None) -> Draw:
        """Token models need no randomness: the same batch always scores the same."""
        return Draw()

    def draws_per_epoch(self, needs: frozenset[str]) -> bool:
        """Never: a precomputed reference holds one value per row for every epoch."""
        return False

    # -- likelihood ------------------------------------------------------------------------
    def surrogate(self, model: nn.Module, batch: Batch, draw: Draw, needs: frozenset[str]) -> Surrogate:
        """Summed response-token log-probs, with per-token terms and what ``needs`` asks."""
        inputs, wants = batch.inputs, Wants.of(needs)
        if not inputs["paired"]:
            scores = score_responses(model, inputs["prompt_ids"], inputs["completion_ids"], inputs["pad_id"],
                                     wants=wants)
            out = unpaired_surrogate(scores, inputs["label"])
            if "terms:kl_mismatched" in needs:
                out.terms["kl_mismatched"] = kl_mismatched(model, inputs["prompt_ids"], inputs["mismatched_ids"],
                                                           inputs["pad_id"])
            return out
        if needs & UNPAIRED_NEEDS:
            raise ConfigError(f"the objective needs {', '.join(sorted(needs & UNPAIRED_NEEDS))}, which only "
                              "unpaired rows have; set data.schema: unpaired (paired rows are split into a "
                              "desirable and an undesirable completion)")
        return pair_surrogate(*score_pairs(model, inputs["prompt_ids"], inputs["chosen_ids"], inputs["rejected_ids"],
                                           inputs["pad_id"], packed=self.options.packed, wants=wants))

    # -- outputs ---------------------------------------------------------------------------
    example = staticmethod(example)  # a tiny model and rows: ``mmalign check-plugin text``

    def export(self, model: nn.Module, out_dir: str, card: str) -> list[str]:
        """The peft adapter folder of a LoRA policy, else ``save_pretrained`` in safetensors;
        the tokenizer and a README.md card beside it (:func:`export_pretrained`)."""
        return export_pretrained(model, self._require_tokenizer(), out_dir, card, merged=self.options.export_merged)

    def sample(self, model: nn.Module, prompts: Sequence[Any], n: int, seeds: int | Sequence[int],
               init: Any = None, strength: float | None = None) -> list[list[str]]:
        """``n`` sampled responses per prompt (strings or message lists); prompt ``i``'s come
        from ``seeds[i]`` alone (an int ``s`` means ``s, s + 1, ...``)."""
        refuse_init(init, strength, "text")
        self._require_tokenizer()
        with evaluating(model):
            return [self._sample_one(model, prompt, index, n, seed)
                    for index, (prompt, seed) in enumerate(zip(prompts, normalize_seeds(seeds, len(prompts))))]

    def _sample_one(self, model: nn.Module, prompt: Any, index: int, n: int, seed: int) -> list[str]:
        record = {"sample_id": f"prompt {index}", "prompt": prompt}
        ids = torch.tensor([self._encode(record, [])["prompt_ids"]], device=device_of(model))
        generated = new_tokens(model, {"input_ids": ids, "attention_mask": torch.ones_like(ids)}, n=n, seed=seed,
                               do_sample=True, max_new_tokens=self.options.max_new_tokens,
                               pad_id=_pad_id(self.tokenizer))
        return self.tokenizer.batch_decode(generated, skip_special_tokens=True)

    # -- tokenising ------------------------------------------------------------------------
    def _encode(self, record: dict[str, Any], responses: Sequence[Any]) -> dict[str, list]:
        return encoding.encode(self._require_tokenizer(), self.options, record, responses)

    def _require_tokenizer(self):
        if self.tokenizer is None:
            raise ConfigError("the text modality has no tokenizer yet: call load_policy first")
        return self.tokenizer


def _sides(inputs: dict[str, Any]) -> list[dict[str, list[int]]]:
    return [{"chosen_ids": c, "rejected_ids": r} for c, r in zip(inputs["chosen_ids"], inputs["rejected_ids"])]


def _sample_id(record: dict[str, Any]) -> str:
    if "sample_id" not in record:
        raise DataError("a record has no sample_id", hint="Build records with TextModality.load_records")
    return str(record["sample_id"])


def _pad_id(tokenizer) -> int:
    # padded positions are masked out of attention and scores, so any valid id will do
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if candidate is not None:
            return candidate
    return 0
