"""The text modality: its surrogate equals the plain formula on the tiny Llama.

Token ids below are worked out by hand from the byte-level tiny tokenizer: a character's id
is its UTF-8 byte ("H" = 72, "i" = 105, "\\n" = 10), and the specials follow the 256 bytes:
<pad> 256, <s> 257, </s> 258, <|system|> 259, <|user|> 260, <|assistant|> 261.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from mmalign.errors import ConfigError, DataError
from mmalign.modalities.text import TextModality, TextOptions
from mmalign.modality import ModelSpec, check_needs
from mmalign.models.text import TINY_VOCAB_SIZE, tiny_llama, tiny_tokenizer
from mmalign.objectives.conditional import CORRUPTED
from mmalign.registry import modalities
from mmalign.train.adapters import inject

BOS, EOS, USER, ASSISTANT, NL = 257, 258, 260, 261, 10
ATOL = 1e-5  # float32 forward of a 2-layer model; batched vs single-row paths differ by rounding only


def ids(text: str) -> list[int]:
    return list(text.encode())


def plain_logp(model, prompt_ids: list[int], response_ids: list[int]) -> torch.Tensor:
    """sum_u log softmax(logits at position p + u - 1)[y_u] on one unpadded sequence."""
    sequence = torch.tensor([prompt_ids + response_ids])
    with torch.no_grad():
        logps = F.log_softmax(model(input_ids=sequence).logits[0].float(), dim=-1)
    p = len(prompt_ids)
    return sum(logps[p + u - 1, token] for u, token in enumerate(response_ids))


def loaded(**options) -> tuple[TextModality, torch.nn.Module]:
    modality = TextModality(**options)
    return modality, modality.load_policy(ModelSpec(builder="tiny_llama"))


@pytest.fixture(scope="module")
def plain():
    return loaded(chat_template=False, max_length=64)


@pytest.fixture(scope="module")
def chat():
    return loaded(max_length=64)


def test_entry_point_finds_the_class():
    assert modalities.get("text") is TextModality


def test_tiny_tokenizer_matches_the_model():
    tokenizer = tiny_tokenizer()
    assert len(tokenizer) == TINY_VOCAB_SIZE == tiny_llama().config.vocab_size
    assert tokenizer("Hi é", add_special_tokens=False).input_ids == [72, 105, 32, 195, 169]
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id) == (BOS, EOS, 256)


def test_plain_surrogate_is_the_summed_token_logps(plain):
    """Prompt "Hi" -> [72, 105]; response "yo" + eos -> [121, 111, 258]. The second row is
    longer so the first is padded: padding must not change its score."""
    modality, model = plain
    records = [{"sample_id": "r0", "prompt": "Hi", "chosen": "yo", "rejected": "no way"},
               {"sample_id": "r1", "prompt": "Tell me", "chosen": "a longer answer", "rejected": "x"}]
    batch = modality.collate(records)
    out = modality.surrogate(model, batch, modality.draw(batch, 0, model), frozenset({"token_logps"}))
    expected_chosen = torch.stack([plain_logp(model, ids("Hi"), ids("yo") + [EOS]),
                                   plain_logp(model, ids("Tell me"), ids("a longer answer") + [EOS])])
    expected_rejected = torch.stack([plain_logp(model, ids("Hi"), ids("no way") + [EOS]),
                                     plain_logp(model, ids("Tell me"), ids("x") + [EOS])])
    assert_close(out.chosen.detach(), expected_chosen, atol=ATOL, rtol=0)
    assert_close(out.rejected.detach(), expected_rejected, atol=ATOL, rtol=0)
    # units: one column per response token, masked past each response, summing to the total
    assert out.chosen_mask.sum(-1).tolist() == [3, 16]
    assert out.rejected_mask.sum(-1).tolist() == [7, 2]
    assert_close(out.chosen_units.sum(-1), out.chosen, atol=0, rtol=0)
    assert bool((out.chosen_units[~out.chosen_mask] == 0).all())


def test_chat_template_tokens_and_score(chat):
    """<s><|user|>\\nSky?</s><|assistant|>\\n is the prompt; blue</s> the response."""
    modality, model = chat
    record = {"sample_id": "c0", "prompt": [{"role": "user", "content": "Sky?"}],
              "chosen": [{"role": "assistant", "content": "blue"}], "rejected": "grey"}
    prompt = [BOS, USER, NL, *ids("Sky?"), EOS, ASSISTANT, NL]
    batch = modality.collate([record])
    assert batch.inputs["prompt_ids"] == [prompt]
    assert batch.inputs["chosen_ids"] == [ids("blue") + [EOS]]
    assert batch.inputs["rejected_ids"] == [ids("grey") + [EOS]]
    out = modality.surrogate(model, batch, modality.draw(batch, 0, model), frozenset())
    assert_close(out.chosen.detach()[0], plain_logp(model, prompt, ids("blue") + [EOS]), atol=ATOL, rtol=0)
    assert_close(out.rejected.detach()[0], plain_logp(model, prompt, ids("grey") + [EOS]), atol=ATOL, rtol=0)


@pytest.mark.parametrize("packed, rows", [(False, 6), (True, 3)])
def test_chosen_and_rejected_share_one_forward(plain, packed, rows):
    """Naive: 3 chosen + 3 rejected rows, stacked; packed: one [prompt | chosen | rejected] row per pair."""
    modality, model = plain
    calls = []
    handle = model.model.register_forward_hook(
        lambda module, args, kwargs, output: calls.append(output.last_hidden_state.shape[0]), with_kwargs=True)
    batch = modality.collate([{"sample_id": "r", "prompt": "a", "chosen": "b", "rejected": "c"}] * 3)
    try:
        modality.options.packed = packed
        modality.surrogate(model, batch, modality.draw(batch, 0, model), frozenset())
    finally:
        modality.options.packed = False
        handle.remove()
    assert calls == [rows]


@pytest.mark.parametrize("truncation, kept", [
    ("keep_start", ids("abcdef")),           # the first 6 of a..h, </s>
    ("keep_end", ids("defgh") + [EOS]),     # the last 6
])
def test_response_truncation(truncation, kept):
    """max_length 8, prompt "Hi" (2 tokens): 6 tokens of room for the 9-token response."""
    modality, _ = loaded(chat_template=False, max_length=8, truncation=truncation)
    batch = modality.collate([{"sample_id": "t", "prompt": "Hi", "chosen": "abcdefgh", "rejected": "z"}])
    assert (batch.inputs["prompt_ids"][0], batch.inputs["chosen_ids"][0]) == (ids("Hi"), kept)


def test_max_prompt_length_keeps_the_prompt_end():
    modality, _ = loaded(chat_template=False, max_length=8, max_prompt_length=3)
    batch = modality.collate([{"sample_id": "t", "prompt": "Hello", "chosen": "ok", "rejected": "z"}])
    assert (batch.inputs["prompt_ids"][0], batch.inputs["chosen_ids"][0]) == (ids("llo"), ids("ok") + [EOS])


def test_prompt_too_long_names_file_row_and_field(write_jsonl):
    path = write_jsonl("pairs.jsonl", [{"prompt": "fine", "chosen": "a", "rejected": "b"},
                                       {"prompt": "too long", "chosen": "a", "rejected": "b"}])
    modality, _ = loaded(chat_template=False, max_length=6)
    records = modality.load_records(str(path), "preference")
    with pytest.raises(DataError) as err:
        modality.collate(records)
    assert str(err.value) == (
        f"{path}, row 1, field 'prompt': the prompt alone is 8 tokens, which leaves no room for a "
        "response within max_length=6. Raise model.options.max_length, or set max_prompt_length "
        "to keep only the prompt's last tokens")


def test_unpaired_rows_label_and_kl_mismatched(plain):
    """Row i's KL term scores completion i+1 (cyclically) after prompt i, without gradient."""
    modality, model = plain
    rows = [("Q1", "yes", True), ("Q22", "no", False), ("Q333", "maybe so", True)]
    records = [{"sample_id": f"u{i}", "prompt": p, "completion": c, "label": lab}
               for i, (p, c, lab) in enumerate(rows)]
    batch = modality.collate(records)
    out = modality.surrogate(model, batch, modality.draw(batch, 0, model),
                             frozenset({"label", "terms:kl_mismatched"}))
    assert out.rejected is None
    assert out.label.tolist() == [True, False, True]
    expected = torch.stack([plain_logp(model, ids(rows[i][0]), ids(rows[(i + 1) % 3][1]) + [EOS])
                            for i in range(3)])
    assert_close(out.terms["kl_mismatched"], expected, atol=ATOL, rtol=0)
    assert not out.terms["kl_mismatched"].requires_grad
    matched = torch.stack([plain_logp(model, ids(p), ids(c) + [EOS]) for p, c, _ in rows])
    assert_close(out.chosen.detach(), matched, atol=ATOL, rtol=0)


def test_vocab_and_hidden_extras(plain):
    """vocab_logps[b, u] is the full next-token distribution that scores response token u;
    the LM head applied to hidden[b, u] gives the same logits."""
    modality, model = plain
    batch = modality.collate([{"sample_id": "v", "prompt": "Hi", "chosen": "yo", "rejected": "nope"}])
    out = modality.surrogate(model, batch, modality.draw(batch, 0, model), frozenset({"vocab_logps", "hidden"}))
    vocab, hidden = out.extras["vocab_logps_rejected"], out.extras["hidden_rejected"]
    assert vocab.shape == (1, 5, TINY_VOCAB_SIZE) and hidden.shape == (1, 5, 32)
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids("Hi") + ids("nope") + [EOS]])).logits[0]
    expected = F.log_softmax(logits[1:6], dim=-1)  # positions 1..5 predict tokens 2..6
    assert_close(vocab[0].detach(), expected, atol=ATOL, rtol=0)
    assert_close(F.log_softmax(model.lm_head(hidden[0]), -1).detach(), expected, atol=ATOL, rtol=0)
    targets = torch.tensor(ids("nope") + [EOS])
    assert_close(out.rejected_units[0], vocab[0].gather(-1, targets[:, None]).squeeze(-1), atol=0, rtol=0)
    # the chosen side is padded to 5 columns: its masked columns are zero
    assert out.chosen_mask[0].tolist() == [True, True, True, False, False]
    assert bool((out.extras["vocab_logps_chosen"][0, 3:] == 0).all())


def test_refuses_needs_it_cannot_fill(plain):
    """The core refuses what the modality never fills; the plugin what these rows cannot fill."""
    modality, model = plain
    with pytest.raises(ConfigError, match=r"cannot provide terms:chosen\|condition=corrupted"):
        check_needs(modality, frozenset({f"terms:{CORRUPTED}"}), "text")
    batch = modality.collate([{"sample_id": "r", "prompt": "a", "chosen": "b", "rejected": "c"}])
    with pytest.raises(ConfigError, match="set data.schema: unpaired"):
        modality.surrogate(model, batch, modality.draw(batch, 0, model), frozenset({"label"}))


def test_options_are_validated():
    assert TextModality.Options is TextOptions
    with pytest.raises(ConfigError) as err:
        TextModality(truncation="middle")
    assert str(err.value) == ("model.options of modality 'text':\nmodel.options.truncation: Input should be "
                              "'keep_end' or 'keep_start' (got 'middle')")
    with pytest.raises(ConfigError, match="max_prompt_length \\(512\\) must be smaller than max_length"):
        TextModality(max_prompt_length=512)
    with pytest.raises(ConfigError, match="model.options.chat_template: Input should be a valid boolean"):
        TextModality(chat_template="yes")
    with pytest.raises(ConfigError, match="model.options.max_len: Extra inputs are not permitted"):
        TextModality(max_len=3)
    with pytest.raises(ConfigError, match="Did you mean 'tiny_llama'"):
        TextModality().load_policy(ModelSpec(builder="tiny_lama"))


def test_load_records_ids_and_unpaired_split(write_jsonl):
    path = write_jsonl("mixed.jsonl", [{"prompt": "p", "chosen": "c", "rejected": "r", "margin": 2}])
    modality = TextModality()
    paired = modality.load_records(str(path), None)
    assert [(r["sample_id"], r["chosen"], r["fields"]) for r in paired] == [("mixed.jsonl:0", "c", {"margin": 2.0})]
    split = modality.load_records(str(path), "unpaired")
    assert [(r["sample_id"], r["completion"], r["label"]) for r in split] == [
        ("mixed.jsonl:0:0", "c", True), ("mixed.jsonl:0:1", "r", False)]


def test_export_full_model_reloads_with_same_scores(plain, tmp_path):
    modality, model = plain
    written = modality.export(model, str(tmp_path / "out"), "# tiny\n")
    names = {p.rsplit("/", 1)[-1] for p in written}
    assert {"model.safetensors", "config.json", "tokenizer.json", "README.md"} <= names
    again = TextModality(chat_template=False, max_length=64)
    reloaded = again.load_policy(ModelSpec(path=str(tmp_path / "out")))
    record = [{"sample_id": "e", "prompt": "Hi", "chosen": "yo", "rejected": "no"}]
    first = modality.surrogate(model, modality.collate(record), None, frozenset())
    second = again.surrogate(reloaded, again.collate(record), None, frozenset())
    assert_close(second.chosen, first.chosen, atol=1e-6, rtol=0)
    assert (tmp_path / "out" / "README.md").read_text() == "# tiny\n"


def test_export_lora_writes_an_adapter_that_reloads(tmp_path):
    from peft import LoraConfig

    modality, model = loaded(chat_template=False)
    inject(model, LoraConfig(r=2, lora_alpha=2, target_modules=list(modality.lora_target_modules)))
    with torch.no_grad():  # a trained adapter: B non-zero so the adapter changes the output
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.linspace(-0.5, 0.5, param.numel()).view_as(param))
    written = modality.export(model, str(tmp_path / "adapter"), "card")
    names = {p.rsplit("/", 1)[-1] for p in written}
    assert {"adapter_config.json", "adapter_model.safetensors"} <= names and "model.safetensors" not in names
    sequence = torch.tensor([ids("Hello")])
    # peft itself and transformers' adapter loader both read the folder
    from peft import PeftModel

    for base in (PeftModel.from_pretrained(tiny_llama(), str(tmp_path / "adapter")), tiny_llama()):
        if not isinstance(base, PeftModel):
            base.load_adapter(str(tmp_path / "adapter"))
        with torch.no_grad():
            assert_close(base(input_ids=sequence).logits, model(input_ids=sequence).logits, atol=1e-6, rtol=0)
    with torch.no_grad():
        assert not torch.allclose(tiny_llama()(input_ids=sequence).logits, model(input_ids=sequence).logits)


def test_sample_depends_on_the_prompt_and_its_seed_only(plain):
    modality, model = plain
    small = TextModality(chat_template=False, max_new_tokens=4)
    small.tokenizer = modality.tokenizer
    first = small.sample(model, ["Hi", "Yo"], 2, [3, 8])
    assert len(first) == 2 and all(len(texts) == 2 for texts in first)
    assert small.sample(model, ["Hi", "Yo"], 2, [3, 8]) == first
    assert small.sample(model, ["Yo"], 2, [8]) == [first[1]]  # not on the other prompts
    assert small.sample(model, ["Hi", "Yo"], 2, 3) == small.sample(model, ["Hi", "Yo"], 2, [3, 4])
    with pytest.raises(ConfigError, match="cannot continue from a start sample"):
        small.sample(model, ["Hi"], 1, [0], init=["Hello"], strength=0.5)
