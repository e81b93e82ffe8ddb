"""Finding object mentions in generated text, over an object vocabulary with synonyms.

The vocabulary file (``assets/coco_objects.json`` for COCO's 80 classes) holds ``classes``
(class -> synonyms), ``phrases`` (word pairs read as one word, e.g. "baby bird" -> "bird")
and ``drop_if_present`` (word -> word whose presence cancels it: "seat" with "toilet").
Matching follows CHAIR (Rohrbach et al. 2018, arXiv:1809.02156): lower-case words, plurals
made singular, phrases and multi-word synonyms matched longest first, every mention counted.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from mmalign import assets
from mmalign.errors import ConfigError

#: COCO's vocabulary, shipped with mmalign
DEFAULT_VOCABULARY = assets.path("coco_objects.json")

_IRREGULAR = {"men": "man", "women": "woman", "mice": "mouse", "geese": "goose", "teeth": "tooth",
              "feet": "foot", "knives": "knife", "wives": "wife", "calves": "calf", "shelves": "shelf",
              "leaves": "leaf", "buses": "bus", "scissors": "scissors", "people": "people",
              "children": "children", "oxen": "oxen", "skis": "skis", "species": "species"}


def singular(word: str) -> str:
    """A plural noun's singular by English suffix rules, good enough for object nouns."""
    if word in _IRREGULAR:
        return _IRREGULAR[word]
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"  # ponies -> pony
    if word.endswith(("sses", "ches", "shes", "xes", "zzes")):
        return word[:-2]  # glasses -> glass, benches -> bench, boxes -> box
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]  # dogs -> dog, horses -> horse, ties -> tie
    return word


@dataclass
class ObjectVocabulary:
    synonyms: dict[str, str]        # surface form (singular) -> class
    phrases: dict[str, str]         # two-word phrase -> the word it stands for
    drop_if_present: dict[str, str]

    @property
    def classes(self) -> list[str]:
        return sorted(set(self.synonyms.values()))

    def canonical(self, name: str) -> str:
        """The class of an annotation given as a class name or one of its synonyms."""
        key = " ".join(singular(w) for w in name.lower().split())
        if key not in self.synonyms and name.lower() not in self.synonyms:
            raise ConfigError(f"annotation object '{name}' is not in the object vocabulary; use one of "
                              f"{', '.join(self.classes[:10])}, ... (or add it to the vocabulary file)")
        return self.synonyms.get(key, self.synonyms.get(name.lower()))

    def mentions(self, text: str) -> list[str]:
        """The class of every object mention in ``text``, in order (repeats kept)."""
        words = [singular(w) for w in re.findall(r"[a-z]+", text.lower())]
        present = set(words)
        words = [w for w in words if self.drop_if_present.get(w) not in present]
        found, i = [], 0
        while i < len(words):
            pair = " ".join(words[i: i + 2])
            if pair in self.phrases:  # "baby bird" -> bird; "home plate" -> no object at all
                word = self.phrases[pair]
                found += [self.synonyms[word]] if word in self.synonyms else []
                i += 2
                continue
            for span in (3, 2, 1):  # longest synonym first: "teddy bear" before "bear"
                candidate = " ".join(words[i: i + span])
                if i + span <= len(words) and candidate in self.synonyms:
                    found.append(self.synonyms[candidate])
                    i += span
                    break
            else:
                i += 1
        return found


def load_vocabulary(path: str | os.PathLike | None = None) -> ObjectVocabulary:
    """The object vocabulary from ``path`` (default: COCO's, ``assets/coco_objects.json``)."""
    path = Path(path or os.environ.get("MMALIGN_OBJECT_VOCABULARY") or DEFAULT_VOCABULARY)
    if not path.is_file():
        raise ConfigError(f"object vocabulary '{path}' not found; pass vocabulary=<path to a JSON file like "
                          "assets/coco_objects.json> or set MMALIGN_OBJECT_VOCABULARY")
    data = json.loads(path.read_text(encoding="utf-8"))
    synonyms = {}
    for name, others in data["classes"].items():
        for form in (name, *others):
            synonyms[" ".join(singular(w) for w in form.lower().split())] = name
    return ObjectVocabulary(synonyms, dict(data.get("phrases", {})), dict(data.get("drop_if_present", {})))
