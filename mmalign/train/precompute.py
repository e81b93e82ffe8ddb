"""Precomputed reference surrogates: one pass before training, safetensors shards on disk.

The cache key holds everything the values depend on: the data (a fingerprint of the
records), the reference model (a hash of its weights), the modality and its options, the
needs, and the draw seed. A cache made for other data or another model is simply not found
under the new key: it is recomputed and the log says so.

Draws are per row, seeded by ``(seed, sample_id, epoch)``, so a precomputed diffusion
reference equals the live one epoch by epoch. A modality whose draws do not change between
epochs for the needs in use (``draws_per_epoch(needs)`` is False: text, plain-DPO
vision-language) stores one value per row, read in every epoch.

:func:`build` runs the pass for a trainer session; :class:`PrecomputedReference` is the store.
"""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from mmalign.errors import ConfigError
from mmalign.modality import draws_per_epoch
from mmalign.surrogate import Batch, Surrogate

log = logging.getLogger("mmalign")

#: needs a per-row store cannot hold: too large per row ([tokens x vocabulary], hidden states),
#: or not a property of one row (KTO's mismatched pairs depend on the batch's other rows)
UNSTORABLE = ("vocab_logps", "hidden", "terms:kl_mismatched")
_ROW_FIELDS = ("chosen", "rejected", "chosen_units", "rejected_units", "chosen_mask",
               "rejected_mask", "label")


#: what each unstorable need is, as the refusal explains it
_WHY_UNSTORABLE = {
    "vocab_logps": "the reference's full token distribution at every response token (a [tokens x "
                   "vocabulary] tensor per row), which token-wise KL terms read",
    "hidden": "the reference's hidden states at every response token (a [tokens x hidden size] "
              "tensor per row)",
    "terms:kl_mismatched": "a value that depends on the other rows of a batch (prompts paired with "
                           "other rows' completions), not a property of one row",
}


def _needing(bad: set[str], objective: Any) -> list[str]:
    """Names of the recipe's objectives (a single or composed one) that ask for a need in ``bad``."""
    terms = getattr(objective, "terms", None)
    if terms is not None:
        return [t.spec.name for t in terms if t.spec.needs_for(dict(t.params)) & bad]
    return [getattr(objective, "name", "the objective")]


def check_storable(needs: Iterable[str], policy_dependent_draw: bool, objective: Any) -> None:
    """Refuse a precomputed reference for needs a per-row store cannot hold, naming the
    recipe's ``objective`` terms that ask for them."""
    needs = frozenset(needs)
    bad = sorted(n for n in needs if n in UNSTORABLE)
    if bad:
        users = _needing(set(bad), objective)
        names = ", ".join(repr(u) for u in users)
        who = f"objective {names} needs" if len(users) == 1 else f"objectives {names} need"
        why = "; ".join(f"{n} is {_WHY_UNSTORABLE.get(n, 'not storable per row')}" for n in bad)
        raise ConfigError(f"reference.strategy 'precomputed' cannot store {', '.join(bad)}, which "
                          f"{who} from the reference: {why}. Use reference.strategy="
                          "adapters_off (a LoRA policy) or copy, which run the reference live, for "
                          "this objective")
    if policy_dependent_draw:
        raise ConfigError("reference.strategy 'precomputed' is refused: this modality's draw "
                          "depends on the policy being trained (e.g. InPO's DDIM inversion), so "
                          "the reference cannot be computed ahead; use copy or adapters_off")


_PLAIN = (int, float, str, bool, type(None))


def _hash_value(h, value: Any) -> None:
    if isinstance(value, (list, tuple)) and all(type(v) in _PLAIN for v in value):
        # token ids and other flat lists: one repr (with its separators) instead of one
        # update per element, which made the fingerprint of a large set take seconds
        h.update(repr(list(value)).encode())
    elif isinstance(value, Tensor):
        h.update(value.detach().cpu().contiguous().numpy().tobytes())
    elif isinstance(value, (bytes, bytearray)):
        h.update(value)
    elif isinstance(value, dict):
        for k in sorted(value):
            h.update(str(k).encode())
            _hash_value(h, value[k])
    elif isinstance(value, (list, tuple)):
        for v in value:
            _hash_value(h, v)
    elif hasattr(value, "tobytes"):  # PIL images, numpy arrays
        h.update(value.tobytes())
    else:
        h.update(repr(value).encode())


def fingerprint(records: list[dict[str, Any]]) -> str:
    h = hashlib.blake2b(digest_size=16)
    for record in records:
        _hash_value(h, record)
    return h.hexdigest()


def model_hash(model: nn.Module) -> str:
    h = hashlib.blake2b(digest_size=16)
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        _hash_value(h, tensor.float() if tensor.dtype == torch.bfloat16 else tensor)
    return h.hexdigest()


class PrecomputedReference:
    """Reference surrogates keyed by ``(sample_id, epoch)``, read back as a batch."""

    def __init__(self, root: Path, key: str, per_epoch: bool):
        self.dir = Path(root) / key
        self.per_epoch = per_epoch
        self.rows: dict[str, dict[str, Tensor]] = {}

    @staticmethod
    def key(*, data: str, model: str, modality: str, options: dict, needs: Iterable[str],
            seed: int) -> str:
        text = json.dumps({"data": data, "model": model, "modality": modality, "options": options,
                           "needs": sorted(needs), "seed": seed}, sort_keys=True, default=str)
        return hashlib.blake2b(text.encode(), digest_size=12).hexdigest()

    def row_key(self, sample_id: str, epoch: int) -> str:
        return f"{sample_id}@{epoch if self.per_epoch else 0}"

    def complete(self) -> bool:
        return (self.dir / "done.json").is_file()

    def build(self, batches: Iterable[Batch], compute: Callable[[Batch], Surrogate],
              shard: str = "0") -> int:
        """Compute and write one shard (one per process); returns rows written."""
        self.dir.mkdir(parents=True, exist_ok=True)
        tensors: dict[str, Tensor] = {}
        for batch in batches:
            sur = compute(batch)
            for i, sid in enumerate(batch.sample_id):
                for name, value in _row(sur, i).items():
                    tensors[f"{self.row_key(sid, batch.epoch)}/{name}"] = value
        tmp = self.dir / f".shard-{shard}.tmp"
        save_file(tensors, str(tmp))
        tmp.rename(self.dir / f"shard-{shard}.safetensors")
        return len({k.rsplit("/", 1)[0] for k in tensors})

    def mark_done(self, meta: dict) -> None:
        (self.dir / "done.json").write_text(json.dumps(meta, indent=1, default=str))

    def load(self) -> None:
        for shard in sorted(self.dir.glob("shard-*.safetensors")):
            for key, value in load_file(str(shard)).items():
                row, _, name = key.rpartition("/")
                self.rows.setdefault(row, {})[name] = value

    def lookup(self, batch: Batch, like: Surrogate | None = None) -> Surrogate:
        try:
            rows = [self.rows[self.row_key(sid, batch.epoch)] for sid in batch.sample_id]
        except KeyError as exc:
            raise ConfigError(f"precomputed reference in {self.dir} has no row {exc}; delete the "
                              "folder to recompute it") from None
        out: dict[str, Any] = {}
        for name in _ROW_FIELDS:
            if name in rows[0]:
                out[name] = _stack([r[name] for r in rows])
        terms = sorted(k[len("terms."):] for k in rows[0] if k.startswith("terms."))
        out["terms"] = {t: torch.stack([r[f"terms.{t}"] for r in rows]) for t in terms}
        if like is not None:  # per-unit terms line up with the policy's padding
            for name in ("chosen_units", "rejected_units", "chosen_mask", "rejected_mask"):
                theirs = getattr(like, name)
                if name in out and theirs is not None:
                    out[name] = _pad_to(out[name], theirs.shape[-1]).to(theirs.device)
            out = {k: (v.to(like.chosen.device) if isinstance(v, Tensor) else v) for k, v in out.items()}
        return Surrogate(**out)


def _row(sur: Surrogate, i: int) -> dict[str, Tensor]:
    out = {}
    for name in _ROW_FIELDS:
        value = getattr(sur, name)
        if value is not None:
            out[name] = value[i].detach().cpu().contiguous()
    for side in ("chosen", "rejected"):  # drop right padding so rows re-pad in any batch
        mask = out.get(f"{side}_mask")
        if mask is not None and mask.dim() == 1:
            keep = int(mask.nonzero().max()) + 1 if bool(mask.any()) else 0
            out[f"{side}_mask"] = mask[:keep].clone()
            out[f"{side}_units"] = out[f"{side}_units"][:keep].clone()
    for name, value in sur.terms.items():
        out[f"terms.{name}"] = value[i].detach().cpu().contiguous()
    return out


def _stack(values: list[Tensor]) -> Tensor:
    if values[0].dim() == 0:
        return torch.stack(values)
    width = max(v.shape[0] for v in values)
    return torch.stack([_pad_to(v, width) for v in values])


def _pad_to(x: Tensor, width: int) -> Tensor:
    """Right-pad (with 0 / False) or cut the last dimension to ``width``."""
    if x.shape[-1] >= width:
        return x[..., :width]
    out = torch.zeros(*x.shape[:-1], width, dtype=x.dtype, device=x.device)
    out[..., : x.shape[-1]] = x
    return out


def build(s, live: str, epochs: int) -> "PrecomputedReference":
    """One pass of the live reference ``live`` over session ``s``'s training and held-out rows
    (``epochs`` times when the draws change per epoch, else once), sharded over processes."""
    import time

    recipe, acc = s.recipe, s.accelerator
    # the pass runs before accelerate prepares the models: put them where the batches go
    s.policy.to(acc.device)
    if s.reference.model is not None:
        s.reference.model.to(acc.device)
    per_epoch = draws_per_epoch(s.modality, s.needs)
    key = PrecomputedReference.key(
        data=fingerprint(s.train_records + s.eval_records), model=model_hash(
            s.reference.model if s.reference.model is not None else s.policy),
        modality=recipe.model.modality, options=recipe.model.options, needs=s.needs, seed=recipe.train.seed)
    root = Path(recipe.reference.cache_dir or s.run_dir / "precomputed")
    store = PrecomputedReference(root, key, per_epoch)
    started = time.perf_counter()
    if not store.complete():
        _fill(s, store, root, epochs if per_epoch else 1)
    store.load()
    s.seconds["precompute"] = time.perf_counter() - started
    return store


def _fill(s, store: "PrecomputedReference", root: Path, epochs: int) -> None:
    recipe, acc = s.recipe, s.accelerator
    others = [p.name for p in root.glob("*") if p.is_dir() and p.name != store.dir.name]
    if others:
        log.warning("precomputed reference: none for this data and model (key %s); the cache holds %s, "
                    "made from other data or another model; computing anew", store.dir.name, others)
    check_distinct_ids(s.train_records, s.eval_records)
    rows = s.train_records + s.eval_records  # held-out rows too: eval reads the store
    mine = list(range(acc.process_index, len(rows), acc.num_processes))
    size = recipe.eval.batch_size or recipe.train.batch_size
    n_train = len(s.train_records)

    def batches():
        for epoch in range(epochs):
            keep = [j for j in mine if j < n_train or epoch == 0]  # held-out rows: epoch-0 draws only
            for i in range(0, len(keep), size):
                batch = s.modality.collate([rows[j] for j in keep[i:i + size]])
                batch.epoch = epoch
                # collate makes CPU tensors: moving them to the CPU would copy nothing
                yield batch if acc.device.type == "cpu" else batch.to(acc.device)

    def compute(batch):
        draw = s.modality.draw(batch, recipe.train.seed, s.policy)
        return s.reference.surrogate(s.modality, s.scorer, batch, draw, s.needs)

    written = store.build(batches(), compute, shard=str(acc.process_index))
    log.info("precomputed reference: %d rows written to %s", written, store.dir)
    acc.wait_for_everyone()
    if acc.is_main_process:
        store.mark_done({"epochs": epochs, "rows": len(rows)})
    acc.wait_for_everyone()


def check_distinct_ids(train_records: list[dict], eval_records: list[dict]) -> None:
    """A stored reference is found by sample_id: a held-out row may share an id with a
    training row only if it is the same row."""
    by_id = {r["sample_id"]: r for r in train_records}
    for record in eval_records:
        twin = by_id.get(record["sample_id"])
        if twin is not None and fingerprint([twin]) != fingerprint([record]):
            raise ConfigError(
                f"data.train and data.eval both have a row '{record['sample_id']}' with different "
                "contents, so a precomputed reference cannot tell them apart; give the two files "
                "different names")
