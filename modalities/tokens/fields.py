"""Batch fields objectives ask for by ``fields:<name>``: per-row numbers and per-token masks.

* Per row: the extra numeric columns a schema kept in ``record["fields"]`` (margin rewards,
  scores), as ``[B]`` float tensors, when every row of the batch has them.
* ``chosen_changed`` / ``rejected_changed`` ``[B, U]``: tokens inside the segments where chosen
  and rejected differ. RLHF-V (Yu et al. 2023, arXiv:2312.00849) collects *corrected*
  responses, so the rejected answer and its correction share most tokens; DDPO up-weights the
  tokens of the changed segments. We find them with a token-level diff (longest matching
  blocks, as ``difflib.SequenceMatcher`` computes them, without its junk heuristic).
* ``chosen_token_mask`` / ``rejected_token_mask`` ``[B, U]``: Mask-DPO (Gu et al. 2025,
  arXiv:2503.02846) counts only the factually correct sentences of the chosen response and
  only the hallucinated sentences of the rejected one. Sentences come labelled in the data
  (``label`` 1 = correct, 0 = hallucinated); a token belongs to the sentence its character
  span falls in.

Per-token fields line up with the surrogate's units: ``U`` is the longest response of the
batch, chosen or rejected.
"""
from __future__ import annotations

import difflib
from typing import Any, Sequence

import torch
from torch import Tensor

#: which sentences each side's token mask keeps (Mask-DPO): correct ones of chosen, hallucinated of rejected
KEEP_LABEL = {"chosen": 1, "rejected": 0}


def row_fields(records: Sequence[dict[str, Any]]) -> dict[str, Tensor]:
    """Numeric per-row fields every record of the batch has, as ``[B]`` float tensors."""
    shared = set.intersection(*(set(r.get("fields") or {}) for r in records))
    return {name: torch.tensor([float(r["fields"][name]) for r in records]) for name in sorted(shared)}


def pair_fields(encoded: Sequence[dict[str, Any]]) -> dict[str, Tensor]:
    """Changed-token fields always; sentence masks when any row has sentence labels.

    ``encoded`` rows hold ``chosen_ids`` / ``rejected_ids`` and, for sentence labels,
    ``<side>_spans`` (``(start, end, label)`` character ranges) with ``<side>_offsets`` (each
    token's character span); rows without labels count every response token.
    """
    units = max(max(len(e["chosen_ids"]), len(e["rejected_ids"])) for e in encoded)
    diffs = [changed_tokens(e["chosen_ids"], e["rejected_ids"]) for e in encoded]
    out = {"chosen_changed": pad_rows([d[0] for d in diffs], units),
           "rejected_changed": pad_rows([d[1] for d in diffs], units)}
    if any("chosen_spans" in e or "rejected_spans" in e for e in encoded):
        for side, keep in KEEP_LABEL.items():
            rows = [sentence_token_mask(e[f"{side}_offsets"], e[f"{side}_spans"], keep)
                    if f"{side}_spans" in e else [True] * len(e[f"{side}_ids"]) for e in encoded]
            out[f"{side}_token_mask"] = pad_rows(rows, units)
    return out


def changed_tokens(chosen: Sequence[int], rejected: Sequence[int]) -> tuple[list[bool], list[bool]]:
    """For each token of ``chosen`` and of ``rejected``: is it outside every matching block?"""
    chosen_changed, rejected_changed = [True] * len(chosen), [True] * len(rejected)
    matcher = difflib.SequenceMatcher(None, list(chosen), list(rejected), autojunk=False)
    for block in matcher.get_matching_blocks():
        chosen_changed[block.a: block.a + block.size] = [False] * block.size
        rejected_changed[block.b: block.b + block.size] = [False] * block.size
    return chosen_changed, rejected_changed


def sentence_token_mask(offsets: Sequence[tuple[int, int]], spans: Sequence[tuple[int, int, int]],
                        keep_label: int) -> list[bool]:
    """Tokens whose character span lies in a sentence labelled ``keep_label``.

    ``spans`` are ``(start, end, label)`` character ranges of the labelled sentences; a token
    belongs to the sentence containing its first character. EOS (an empty span at the end)
    belongs to no sentence.
    """
    out = []
    for start, end in offsets:
        inside = [label for s, e, label in spans if s <= start < e] if end > start else []
        out.append(bool(inside) and inside[0] == keep_label)
    return out


def pad_rows(rows: Sequence[Sequence[bool]], units: int) -> Tensor:
    """Ragged per-token flags as a ``[B, units]`` bool tensor (False beyond each row)."""
    out = torch.zeros((len(rows), units), dtype=torch.bool)
    for b, row in enumerate(rows):
        out[b, : len(row)] = torch.tensor(list(row), dtype=torch.bool)
    return out
