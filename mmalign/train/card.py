"""The model card written beside an export: what was trained, on what, how, and how it ended."""
from __future__ import annotations

import json


def model_card(recipe, rows: int, steps: int, last: dict[str, float]) -> str:
    """A README in Markdown for the exported model (``rows``: training rows; ``last``: the
    final logged metrics)."""
    r = recipe
    return "\n".join([
        f"# {r.model.modality} policy trained with mmalign",
        "",
        f"- base model: {r.model.path or f'builder {r.model.builder!r} of the {r.model.modality} plugin'}",
        f"- data: {r.data.train} (schema {r.data.schema_ or 'default'}, {rows} rows)",
        "- objective: " + " + ".join(f"{t.weight} x {t.name}({json.dumps(t.params)})" for t in r.objective),
        f"- reference: {r.reference.strategy}",
        f"- lora: {r.model.lora.model_dump() if r.model.lora else 'none (full fine-tuning)'}",
        f"- training: {json.dumps(r.train.model_dump(), default=str)}",
        f"- steps: {steps}",
        "- final metrics: " + ", ".join(f"{k}={v:.4g}" for k, v in sorted(last.items())),
    ])
