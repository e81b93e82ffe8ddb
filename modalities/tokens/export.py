"""Writing a trained token model in the formats transformers and peft load.

A LoRA policy (the trainer adds adapters in place, with peft) is written as a peft adapter
folder (``adapter_config.json`` + ``adapter_model.safetensors``) that
``PeftModel.from_pretrained(base, folder)`` and transformers' ``load_adapter(folder)`` read;
a fully fine-tuned one with ``save_pretrained`` in safetensors. The tokenizer or processor
goes along so the folder is complete, and ``README.md`` holds the model card.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from mmalign.train import adapters


def export_pretrained(model: nn.Module, processor: Any, out_dir: str, card: str) -> list[str]:
    """Write ``model`` (adapter or full weights), ``processor`` (a tokenizer or processor,
    or None) and ``README.md``; return the paths written, sorted."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    before = set(_files(out))
    if adapters.has_adapters(model):
        adapters.save_adapter(model, out)
    else:
        model.save_pretrained(str(out), safe_serialization=True)
    if processor is not None:
        processor.save_pretrained(str(out))
    (out / "README.md").write_text(card if card.endswith("\n") else card + "\n", encoding="utf-8")
    return sorted(str(p) for p in set(_files(out)) - before | {out / "README.md"})


def _files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()]
