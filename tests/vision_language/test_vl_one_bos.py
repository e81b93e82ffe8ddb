"""A prompt holds one BOS: a chat template that writes ``{{ bos_token }}`` itself (Llama-3
style) must not get a second one from the tokenizer, which would shift every log-prob after it."""
from __future__ import annotations

from PIL import Image

from mmalign.data.io import RowRef
from mmalign.modalities.tokens.responses import adds_bos
from mmalign.modalities.vision_language.encoding import encode_pair
from vl_helpers import tiny_modality

MESSAGES = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What color is the image?"}]}]


def prompt_ids(processor) -> list[int]:
    image = Image.new("RGB", (32, 32), (220, 20, 20))
    return encode_pair(processor, MESSAGES, [image], "red .", "blue .", 160, RowRef("rows.jsonl", 0)).prompt_ids


def test_a_template_that_writes_the_bos_gets_no_second_one():
    modality, _ = tiny_modality()
    processor = modality.processor
    bos = processor.tokenizer.bos_token_id
    plain = prompt_ids(processor)
    assert plain.count(bos) == 1 and plain[0] == bos  # the tokenizer adds it

    processor.chat_template = "{{ bos_token }}" + processor.chat_template
    with_bos = prompt_ids(processor)
    assert with_bos.count(bos) == 1 and with_bos[0] == bos
    assert with_bos == plain


def test_adds_bos_reads_the_rendered_text():
    modality, _ = tiny_modality()
    tokenizer = modality.processor.tokenizer
    assert adds_bos(tokenizer, "USER: hi")
    assert not adds_bos(tokenizer, tokenizer.bos_token + "USER: hi")
