"""Writing a trained token model in the formats transformers and peft load.

A LoRA policy (the trainer adds adapters in place, with peft) is written as a peft adapter
folder (``adapter_config.json`` + ``adapter_model.safetensors``) that
``PeftModel.from_pretrained(base, folder)`` and transformers' ``load_adapter(folder)`` read;
a fully fine-tuned one with ``save_pretrained`` in safetensors. The tokenizer or processor
goes along so the folder is complete, and ``README.md`` holds the model card. With
``merged``, a LoRA policy is also written with its adapter merged into the weights, in
``merged/`` (``from_pretrained`` loads it with no peft), as diffusion exports do.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from mmalign.train import adapters


def export_pretrained(model: nn.Module, processor: Any, out_dir: str, card: str, merged: bool = False) -> list[str]:
    """Write ``model`` (adapter or full weights; with ``merged`` and an adapter, also the
    merged model in ``merged/``), ``processor`` (a tokenizer or processor, or None) and
    ``README.md``; return the paths written, sorted."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    before = set(_files(out))
    folders = [out]
    if adapters.has_adapters(model):
        adapters.save_adapter(model, out)
        if merged:
            adapters.merged_copy(model).save_pretrained(str(out / "merged"), safe_serialization=True)
            folders.append(out / "merged")
    else:
        model.save_pretrained(str(out), safe_serialization=True)
    for folder in folders if processor is not None else []:
        processor.save_pretrained(str(folder))
    (out / "README.md").write_text(card if card.endswith("\n") else card + "\n", encoding="utf-8")
    return sorted(str(p) for p in set(_files(out)) - before | {out / "README.md"})


def _files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()]
