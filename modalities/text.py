"""The ``text`` modality: causal language models scored by their response-token log-probs.

The surrogate is the exact log-likelihood of the response given the prompt (Rafailov et al.
2023, eq. 7 uses it directly)::

    log pi(y | x) = sum_{u < |y|} log softmax(f(x, y_<u))[y_u]

Chosen and rejected responses of a batch run in one forward pass, stacked along the batch
(chosen rows first). Token models need no randomness, so ``draw`` is empty.
"""
from __future__ import annotations

import difflib
import hashlib
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmalign.data.checks import RowChecks
from mmalign.data.io import RowRef, read_rows
from mmalign.errors import ConfigError, DataError
from mmalign.modality import ModelSpec, check_needs
from mmalign.modalities.tokens.export import export_pretrained
from mmalign.registry import datasets as dataset_schemas
from mmalign.surrogate import Batch, Draw, Surrogate

TRUNCATIONS = ("keep_end", "keep_start")


class TextModality:
    """Preference data over text, for ``transformers`` causal language models.

    Options (the recipe's ``model.options``):

    * ``max_length``: most tokens in prompt + response;
    * ``truncation``: when a response does not fit, ``keep_end`` keeps its last tokens
      (so its ending and end-of-sequence token are scored) and ``keep_start`` its first ones;
    * ``max_prompt_length``: when set, longer prompts keep their last tokens (those nearest
      the response, as TRL does); otherwise a prompt that leaves no room for a response
      is an error;
    * ``chat_template``: render rows with the tokenizer's chat template (string prompts
      become one user message, string responses one assistant message); when false, prompt
      and response are concatenated as they are and an end-of-sequence token closes the
      response;
    * ``max_new_tokens``: response length for :meth:`sample`.
    """

    supported_needs = frozenset({"token_logps", "vocab_logps", "hidden", "label", "terms:kl_mismatched"})
    policy_dependent_draw = False
    lora_target_modules = ("q_proj", "k_proj", "v_proj", "o_proj")

    def __init__(self, max_length: int = 512, truncation: str = "keep_end",
                 max_prompt_length: int | None = None, chat_template: bool = True,
                 max_new_tokens: int = 128):
        _check_int("max_length", max_length, minimum=2)
        _check_int("max_new_tokens", max_new_tokens, minimum=1)
        if truncation not in TRUNCATIONS:
            raise ConfigError(f"text option truncation must be one of {', '.join(TRUNCATIONS)}, "
                              f"got {truncation!r}")
        if max_prompt_length is not None:
            _check_int("max_prompt_length", max_prompt_length, minimum=1)
            if max_prompt_length >= max_length:
                raise ConfigError(f"text option max_prompt_length ({max_prompt_length}) must be smaller "
                                  f"than max_length ({max_length}) to leave room for the response")
        if not isinstance(chat_template, bool):
            raise ConfigError(f"text option chat_template must be true or false, got {chat_template!r}")
        self.max_length = max_length
        self.truncation = truncation
        self.max_prompt_length = max_prompt_length
        self.chat_template = chat_template
        self.max_new_tokens = max_new_tokens
        self.tokenizer = None

    # -- model -----------------------------------------------------------------------------
    def load_policy(self, spec: ModelSpec) -> nn.Module:
        """A causal LM from a local folder (model and tokenizer) or a ``models.text`` builder."""
        dtype = _dtype(spec.dtype)
        if spec.path:
            model, tokenizer = _from_folder(Path(spec.path), dtype)
        elif spec.builder:
            model, tokenizer = _from_builder(spec.builder, spec.builder_args)
            model = model.to(dtype)
        else:
            raise ConfigError("the model section needs a 'path' (a local model folder) or a 'builder'")
        if self.chat_template and tokenizer.chat_template is None:
            raise ConfigError("the tokenizer has no chat template; add one to its tokenizer_config.json "
                              "or set model.options.chat_template: false")
        if len(tokenizer) > model.get_input_embeddings().num_embeddings:
            raise ConfigError(f"the tokenizer has {len(tokenizer)} tokens but the model's embedding only "
                              f"{model.get_input_embeddings().num_embeddings}; use a matching tokenizer")
        self.tokenizer = tokenizer
        return model

    # -- data ------------------------------------------------------------------------------
    def load_records(self, path: str, schema: str | None = None, *,
                     checks: RowChecks | None = None) -> list[dict[str, Any]]:
        """Rows of a local file, normalised by a dataset schema (``preference`` or
        ``unpaired``; guessed from the first row's columns when not given).

        Each record's ``sample_id`` is ``<file name>:<row>`` (``:<k>`` added when a row yields
        several records) and its ``source`` names file and row for later messages. Exact
        duplicate rows are dropped and each row is checked under ``checks.row()``: with
        ``data.on_bad_row: skip`` a bad row is dropped and counted
        (:func:`mmalign.data.checks.load_checked`), the good ones kept.
        """
        checks = checks or RowChecks()
        records: list[dict[str, Any]] = []
        read = False
        for row_index, row in checks.unique(read_rows(path)):
            where = RowRef(str(path), row_index)
            schema = schema or _guess_schema(row, where)  # a file no schema fits is not a bad row
            read = True
            with checks.row():
                records.extend(self._row_records(row, where, schema, Path(path).name))
        if not read:
            raise DataError("holds no rows", file=str(path), hint="Point the recipe at a file with data")
        return records

    def _row_records(self, row: dict[str, Any], where: RowRef, schema: str, name: str) -> list[dict[str, Any]]:
        """The records of one row, or a DataError: a row is kept or dropped whole."""
        produced = dataset_schemas.get(schema)(row, where)
        records = []
        for k, record in enumerate(produced):
            suffix = f":{k}" if len(produced) > 1 else ""
            _check_record(record, where, schema, self.chat_template)
            records.append({**record, "sample_id": f"{name}:{where.row}{suffix}",
                            "source": {"file": str(where.file), "row": where.row}})
        return records

    def check_record(self, record: dict[str, Any]) -> None:
        """Tokenise a record's prompt and responses once the tokenizer is loaded, so a prompt
        that leaves no room for a response is named before training, not at its batch."""
        for side in ("chosen", "rejected", "completion"):
            if side in record:
                self._encode(record, record[side])

    def collate(self, records: Sequence[dict[str, Any]]) -> Batch:
        """Tokenise rows into right-padded sequences and where their responses sit.

        Paired rows give ``2B`` sequences (chosen, then rejected). Unpaired rows give ``B``
        sequences, their labels, and the ``B`` mismatched sequences KTO's KL estimate uses:
        prompt ``i`` with completion ``i + 1`` (cyclically; a batch of one row pairs the row
        with itself, which makes that estimate the matched log-likelihood, so use two or more).
        """
        if not records:
            raise DataError("cannot collate an empty list of records")
        paired = _is_paired(records)
        if paired:
            pairs = [self._encode(r, r["chosen"]) for r in records] + \
                    [self._encode(r, r["rejected"]) for r in records]
            inputs: dict[str, Any] = {"paired": True, "sequences": self._pack(pairs)}
        else:
            shifted = list(records[1:]) + list(records[:1])
            inputs = {
                "paired": False,
                "sequences": self._pack([self._encode(r, r["completion"]) for r in records]),
                "mismatched": self._pack([self._encode(r, s["completion"]) for r, s in zip(records, shifted)]),
                "label": torch.tensor([bool(r["label"]) for r in records]),
            }
        return Batch(inputs=inputs, sample_id=[_sample_id(r) for r in records], fields=_fields(records))

    def draw(self, batch: Batch, seed: int, model: nn.Module | None) -> Draw:
        """Token models need no randomness: the same batch always scores the same."""
        return Draw()

    # -- likelihood ------------------------------------------------------------------------
    def surrogate(self, model: nn.Module, batch: Batch, draw: Draw, needs: frozenset[str]) -> Surrogate:
        """Summed response-token log-probs, with per-token terms and what ``needs`` asks."""
        check_needs(self, needs, "text")
        paired = batch.inputs["paired"]
        unpaired_needs = sorted(needs & {"label", "terms:kl_mismatched"})
        if paired and unpaired_needs:
            raise ConfigError(f"the objective needs {', '.join(unpaired_needs)}, which only unpaired rows "
                              "have; set data.schema: unpaired (paired rows are split into a desirable "
                              "and an undesirable completion)")
        scored = response_logps(model, batch.inputs["sequences"],
                                vocab="vocab_logps" in needs, hidden="hidden" in needs)
        sides = ("chosen", "rejected") if paired else ("chosen",)
        units, mask = scored["units"].chunk(len(sides)), scored["mask"].chunk(len(sides))
        extras = {f"{extra}_{side}": part for extra in ("vocab_logps", "hidden") if extra in scored
                  for side, part in zip(sides, scored[extra].chunk(len(sides)))}
        out = Surrogate(chosen=units[0].sum(-1), chosen_units=units[0], chosen_mask=mask[0], extras=extras)
        if paired:
            out.rejected, out.rejected_units, out.rejected_mask = units[1].sum(-1), units[1], mask[1]
        else:
            out.label = batch.inputs["label"]
        if "terms:kl_mismatched" in needs:
            out.terms["kl_mismatched"] = kl_mismatched(model, batch)
        return out

    # -- outputs ---------------------------------------------------------------------------
    def export(self, model: nn.Module, out_dir: str, card: str) -> list[str]:
        """The peft adapter folder of a LoRA policy, else ``save_pretrained`` in safetensors;
        the tokenizer and a README.md card beside it (:func:`export_pretrained`)."""
        return export_pretrained(model, self._require_tokenizer(), out_dir, card)

    @torch.no_grad()
    def sample(self, model: nn.Module, prompts: Sequence[Any], n: int, seed: int) -> list[list[str]]:
        """``n`` sampled responses per prompt (strings or message lists), reproducible from
        ``seed``: each prompt's draws come from ``(seed, prompt index)`` alone."""
        tokenizer = self._require_tokenizer()
        device = next(model.parameters()).device
        results = []
        for index, prompt in enumerate(prompts):
            record = {"sample_id": f"prompt {index}", "prompt": prompt}
            ids = torch.tensor([self._fit(self._prompt_ids(record), [], record)[0]], device=device)
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                torch.manual_seed(_seed(seed, index))
                generated = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=True,
                                           max_new_tokens=self.max_new_tokens, num_return_sequences=n,
                                           pad_token_id=_pad_id(tokenizer))
            results.append(tokenizer.batch_decode(generated[:, ids.shape[1]:], skip_special_tokens=True))
        return results

    # -- tokenising ------------------------------------------------------------------------
    def _encode(self, record: dict[str, Any], response: Any) -> tuple[list[int], list[int]]:
        """Token ids of a record's prompt and of one response, fitted to ``max_length``."""
        return self._fit(self._prompt_ids(record), self._response_ids(record, response), record)

    def _prompt_ids(self, record: dict[str, Any]) -> list[int]:
        tokenizer = self._require_tokenizer()
        if self.chat_template:
            return tokenizer(self._render(record["prompt"], None), add_special_tokens=False).input_ids
        if not isinstance(record["prompt"], str):
            raise _record_error(record, "prompt", "is a chat conversation but chat_template is off",
                                "Set model.options.chat_template: true")
        # the tokenizer's own convention decides whether a bos token starts the text
        return tokenizer(record["prompt"]).input_ids

    def _response_ids(self, record: dict[str, Any], response: Any) -> list[int]:
        """The response's tokens: with a chat template, what the template adds after the
        generation prompt (role markers and end-of-turn included), as TRL does."""
        tokenizer = self._require_tokenizer()
        if not self.chat_template:
            if not isinstance(response, str):
                raise _record_error(record, "prompt", "the row is a chat conversation but chat_template is off",
                                    "Set model.options.chat_template: true")
            eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
            return tokenizer(response, add_special_tokens=False).input_ids + eos
        prompt_text = self._render(record["prompt"], None)
        full_text = self._render(record["prompt"], response)
        if not full_text.startswith(prompt_text):
            raise _record_error(record, "prompt", "the chat template renders the prompt differently once a "
                                "response follows, so the response tokens cannot be told apart",
                                "Use a chat template whose generation prompt is a prefix of the conversation, "
                                "or set model.options.chat_template: false")
        return tokenizer(full_text[len(prompt_text):], add_special_tokens=False).input_ids

    def _render(self, prompt: Any, response: Any) -> str:
        messages = _as_messages(prompt, "user")
        if response is not None:
            messages += _as_messages(response, "assistant")
        return self._require_tokenizer().apply_chat_template(messages, tokenize=False,
                                                             add_generation_prompt=response is None)

    def _fit(self, prompt: list[int], response: list[int], record: dict[str, Any]) -> tuple[list[int], list[int]]:
        """Truncate the prompt to ``max_prompt_length`` (keeping its end), then the response
        to what is left of ``max_length`` (by ``truncation``)."""
        if self.max_prompt_length is not None:
            prompt = prompt[-self.max_prompt_length:]
        room = self.max_length - len(prompt)
        if room < 1:
            raise _record_error(record, "prompt", f"the prompt alone is {len(prompt)} tokens, which leaves no "
                                f"room for a response within max_length={self.max_length}",
                                "Raise model.options.max_length, or set max_prompt_length to keep only the "
                                "prompt's last tokens")
        if len(response) > room:
            response = response[:room] if self.truncation == "keep_start" else response[-room:]
        return prompt, response

    def _pack(self, pairs: list[tuple[list[int], list[int]]]) -> dict[str, Tensor]:
        """Right-padded ``input_ids`` / ``attention_mask`` and each response's start and length."""
        width = max(len(p) + len(r) for p, r in pairs)
        ids = torch.full((len(pairs), width), _pad_id(self._require_tokenizer()), dtype=torch.long)
        attention = torch.zeros((len(pairs), width), dtype=torch.long)
        for row, (prompt, response) in enumerate(pairs):
            ids[row, :len(prompt) + len(response)] = torch.tensor(prompt + response)
            attention[row, :len(prompt) + len(response)] = 1
        return {"input_ids": ids, "attention_mask": attention,
                "response_start": torch.tensor([len(p) for p, _ in pairs]),
                "response_length": torch.tensor([len(r) for _, r in pairs])}

    def _require_tokenizer(self):
        if self.tokenizer is None:
            raise ConfigError("the text modality has no tokenizer yet: call load_policy first")
        return self.tokenizer


# -- scoring -------------------------------------------------------------------------------

def response_logps(model: nn.Module, sequences: dict[str, Tensor], *, vocab: bool = False,
                   hidden: bool = False) -> dict[str, Tensor]:
    """Per-token log-probs of each sequence's response, left-aligned in ``[N, U]``.

    Response token ``u`` of row ``n`` sits at ``start_n + u`` and is predicted by the logits
    at ``start_n + u - 1``. Returns ``units`` (zero past each response), ``mask`` (bool), and
    on request ``vocab_logps`` ``[N, U, V]`` (the whole next-token distribution, zero past
    each response) and ``hidden`` ``[N, U, H]``: the last hidden state that predicts each
    response token (``h_{x, y<u}``, what the LM head reads; CHES, Razin et al. 2024, arXiv:2410.08847).
    """
    ids = sequences["input_ids"]
    output = model(input_ids=ids, attention_mask=sequences["attention_mask"], use_cache=False,
                   output_hidden_states=hidden)
    target, mask = _response_positions(sequences["response_start"], sequences["response_length"], ids.shape[1])
    logits = _take(output.logits, target - 1)
    # log-softmax in float32: half-precision logits lose the small differences DPO looks at
    logps = F.log_softmax(logits.float(), dim=-1)
    units = logps.gather(-1, ids.gather(1, target).unsqueeze(-1)).squeeze(-1) * mask
    out = {"units": units, "mask": mask}
    if vocab:
        out["vocab_logps"] = logps * mask.unsqueeze(-1)
    if hidden:
        out["hidden"] = _take(output.hidden_states[-1], target - 1)
    return out


def kl_mismatched(model: nn.Module, batch: Batch) -> Tensor:
    """``log pi(y_{i+1} | x_i)`` per row: KTO's estimate of ``KL(pi || ref)`` pairs each prompt
    with another row's completion (Ethayarajh et al. 2024, arXiv:2402.01306).

    Computed without gradient: KTO uses the estimate as its reference point ``z_0`` and does
    not back-propagate through it (TRL neither); a separate pass keeps the main one small.
    """
    with torch.no_grad():
        return response_logps(model, batch.inputs["mismatched"])["units"].sum(-1)


def _response_positions(start: Tensor, length: Tensor, width: int) -> tuple[Tensor, Tensor]:
    """Index of each response token ``[N, U]`` (clamped inside the row) and its mask."""
    steps = torch.arange(int(length.max()), device=start.device)
    mask = steps.unsqueeze(0) < length.unsqueeze(1)
    target = (start.unsqueeze(1) + steps.unsqueeze(0)).clamp(max=width - 1)
    return target, mask


def _take(values: Tensor, index: Tensor) -> Tensor:
    """``values[n, index[n, u], :]`` for ``values`` ``[N, L, D]`` and ``index`` ``[N, U]``."""
    return values.gather(1, index.unsqueeze(-1).expand(-1, -1, values.shape[-1]))


# -- loading -------------------------------------------------------------------------------

def _from_folder(path: Path, dtype: torch.dtype):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not path.is_dir():
        raise ConfigError(f"model path {path} is not a folder; give a local folder written by save_pretrained")
    try:
        return (AutoModelForCausalLM.from_pretrained(path, dtype=dtype),
                AutoTokenizer.from_pretrained(path))
    except (OSError, ValueError, KeyError) as exc:
        raise ConfigError(f"cannot load a causal language model and tokenizer from {path}: {exc}") from exc


def _from_builder(name: str, args: dict[str, Any]):
    from mmalign.models import text as text_models

    if name not in text_models.BUILDERS:
        close = difflib.get_close_matches(name, list(text_models.BUILDERS), n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise ConfigError(f"unknown text model builder '{name}'.{hint} "
                          f"Known text builders: {', '.join(sorted(text_models.BUILDERS))}")
    try:
        model = text_models.BUILDERS[name](**args)
    except TypeError as exc:
        raise ConfigError(f"model.builder_args do not fit builder '{name}': {exc}") from exc
    return model, text_models.TOKENIZERS[name]()


def _dtype(name: str) -> torch.dtype:
    allowed = ("float32", "bfloat16", "float16")
    if name not in allowed:
        raise ConfigError(f"model.dtype must be one of {', '.join(allowed)}, got {name!r}")
    return getattr(torch, name)


# -- records -------------------------------------------------------------------------------

def _guess_schema(row: dict[str, Any], where: RowRef) -> str:
    if "completion" in row:
        return "unpaired"
    if "chosen" in row:
        return "preference"
    raise where.error(None, f"cannot tell the data layout from columns {', '.join(sorted(row))}",
                      "Set data.schema to 'preference' (prompt, chosen, rejected) or "
                      "'unpaired' (prompt, completion, label)")


def _check_record(record: dict[str, Any], where: RowRef, schema: str | None, chat_template: bool) -> None:
    keys = set(record)
    if not ({"prompt", "chosen", "rejected"} <= keys or {"prompt", "completion", "label"} <= keys):
        raise ConfigError(f"dataset schema '{schema}' does not produce text records (prompt with chosen / "
                          "rejected, or prompt with completion / label); use 'preference' or 'unpaired'")
    if not chat_template and not isinstance(record["prompt"], str):
        raise where.error("prompt", "is a chat conversation but chat_template is off",
                          "Set model.options.chat_template: true")


def _is_paired(records: Sequence[dict[str, Any]]) -> bool:
    kinds = {"chosen" in r for r in records}
    if len(kinds) > 1:
        raise DataError("a batch mixes paired rows (chosen / rejected) and unpaired rows (completion / label)",
                        hint="Use one data layout per run")
    return kinds.pop()


def _fields(records: Sequence[dict[str, Any]]) -> dict[str, Tensor]:
    """Numeric per-row fields every record of the batch has, as ``[B]`` float tensors."""
    shared = set.intersection(*(set(r.get("fields", {})) for r in records))
    return {name: torch.tensor([float(r["fields"][name]) for r in records]) for name in sorted(shared)}


def _as_messages(value: Any, role: str) -> list[dict[str, str]]:
    return [{"role": role, "content": value}] if isinstance(value, str) else list(value)


def _sample_id(record: dict[str, Any]) -> str:
    if "sample_id" not in record:
        raise DataError("a record has no sample_id", hint="Build records with TextModality.load_records")
    return str(record["sample_id"])


def _record_error(record: dict[str, Any], field: str, message: str, hint: str) -> DataError:
    source = record.get("source") or {}
    if source:
        return DataError(message, file=source.get("file"), row=source.get("row"), field=field, hint=hint)
    return DataError(f"sample '{record.get('sample_id', '?')}': {message}", field=field, hint=hint)


def _pad_id(tokenizer) -> int:
    # padded positions are masked out of attention and scores, so any valid id will do
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if candidate is not None:
            return candidate
    return 0


def _seed(seed: int, index: int) -> int:
    digest = hashlib.blake2b(f"{seed}|{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def _check_int(name: str, value: Any, minimum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ConfigError(f"text option {name} must be an integer of at least {minimum}, got {value!r}")
