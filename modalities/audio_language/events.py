"""The sound-event vocabulary of the audio hallucination evaluators: event names, the words
and phrases a caption uses for each, and how a yes/no question names each.

An :class:`EventVocabulary` is the object vocabulary of the image evaluators
(:class:`~mmalign.modalities.vision_language.objects.ObjectVocabulary`: lower-case words,
plurals made singular, multi-word forms matched longest first, ``phrases`` read as one word,
``drop_if_present`` words cancelled by another word of the caption) with, per event, the phrase
a POPE-style question asks about ("Is there *a dog barking* in the audio?"). So
:func:`~mmalign.modalities.vision_language.hallucination.chair`,
:func:`~mmalign.modalities.vision_language.hallucination.pope_questions` and
:func:`~mmalign.modalities.vision_language.hallucination.coverage` take it as they take COCO's
objects.

The built-in table (:data:`EVENTS`) covers the events of synthetic test sounds (``tone``,
``chirp``: a frequency sweep, ``click``, ``noise burst``) and the common classes of sound-event
datasets (AudioSet, ESC-50, AudioCaps): dog, cat, bird, car, siren, bell, speech, music, rain,
engine and a few more. Each surface form belongs to one event; the ambiguous ones are settled
here once:

* "chirp" is the sweep event, but a caption that also names a bird means the bird
  (``drop_if_present``); "chirping" and "tweeting" are birds;
* "sing", "singing" and "song" are music, unless the caption names a bird ("birds are
  singing"; "bird song" is a bird);
* "car engine" is the engine, "car horn" and "honking" the car;
* "rising tone" / "falling tone" are the sweep, "tone" alone the tone;
* bare "noise" names no event ("background noise"); "noise burst", "burst of noise",
  "white noise" and "static" do.

Another table is a JSON file in the object vocabulary's format (``classes``: event ->
synonyms, optional ``phrases`` and ``drop_if_present``) with an optional ``sounds`` map (event ->
the phrase its question asks about; by default "a" / "an" and the event's name), given to the
evaluators as ``vocabulary``.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from mmalign.errors import ConfigError
from mmalign.modalities.vision_language.objects import ObjectVocabulary, load_vocabulary, singular

#: event -> the words and phrases a caption uses for it (the name itself matches too; plurals
#: and verb forms ending in -s are made singular before matching: "barks" is "bark")
EVENTS: dict[str, tuple[str, ...]] = {
    # events of synthetic test sounds
    "tone": ("beep", "beeping", "sine wave", "sine tone", "pure tone", "square wave", "sawtooth wave",
             "triangle wave"),
    "chirp": ("sweep", "frequency sweep", "pitch sweep", "upsweep", "downsweep", "glide", "glissando",
              "rising tone", "falling tone", "rising pitch", "falling pitch"),
    "click": ("clicking", "tick", "ticking", "clack", "clacking"),
    "noise burst": ("burst of noise", "white noise", "pink noise", "static", "burst of static"),
    # common sound-event classes
    "dog": ("puppy", "canine", "bark", "barking", "woof", "bow wow", "howl", "howling", "growl", "growling",
            "yelp", "yelping"),
    "cat": ("kitten", "kitty", "meow", "meowing", "miaow", "mew", "mewing", "purr", "purring"),
    "bird": ("birdsong", "bird song", "birdcall", "bird call", "songbird", "chirping", "tweet", "tweeting",
             "warble", "warbling", "squawk", "squawking", "coo", "cooing", "caw", "cawing"),
    "car": ("vehicle", "automobile", "traffic", "truck", "bus", "car horn", "honk", "honking"),
    "siren": ("ambulance", "police siren", "emergency vehicle"),
    "bell": ("ring", "ringing", "chime", "chiming", "doorbell", "church bell", "ding", "dong", "toll", "tolling",
             "jingle", "jingling"),
    "speech": ("speak", "speaking", "spoken", "talk", "talking", "voice", "conversation", "narration", "narrator",
               "speaker", "chatter", "chatting", "whisper", "whispering"),
    "music": ("musical", "melody", "tune", "song", "sing", "singing", "instrument", "guitar", "piano", "drum",
              "violin", "orchestra"),
    "rain": ("raining", "rainfall", "raindrop", "drizzle", "downpour", "rainstorm"),
    "engine": ("motor", "idling", "revving", "rev", "car engine"),
    "wind": ("windy", "breeze", "gust", "gusting"),
    "thunder": ("thunderstorm", "thunderclap"),
    "water": ("stream", "river", "brook", "waterfall", "splash", "splashing", "ocean", "sea", "surf", "trickle",
              "trickling"),
    "footsteps": ("footstep", "walking", "stepping"),
    "door": ("knock", "knocking", "slam", "slamming", "creak", "creaking"),
    "applause": ("clapping", "clap", "applauding"),
    "laughter": ("laugh", "laughing", "giggle", "giggling", "chuckle", "chuckling"),
    "crying": ("cry", "sob", "sobbing", "weep", "weeping", "baby crying"),
    "train": ("railway", "railroad", "locomotive", "train horn"),
    "aircraft": ("airplane", "aeroplane", "plane", "jet", "helicopter"),
}

#: event -> the phrase "Is there ... in the audio?" asks about
SOUNDS: dict[str, str] = {
    "tone": "a tone", "chirp": "a chirp", "click": "a click", "noise burst": "a burst of noise",
    "dog": "a dog barking", "cat": "a cat meowing", "bird": "a bird chirping", "car": "a car passing by",
    "siren": "a siren", "bell": "a bell ringing", "speech": "someone speaking", "music": "music", "rain": "rain",
    "engine": "an engine running", "wind": "wind blowing", "thunder": "thunder", "water": "running water",
    "footsteps": "footsteps", "door": "a door knocking or slamming", "applause": "applause",
    "laughter": "laughter", "crying": "someone crying", "train": "a train", "aircraft": "an aircraft",
}

#: word pairs read as one word before matching (after plurals are made singular); none needed
#: by the built-in table, whose ambiguous words are settled by :data:`DROP_IF_PRESENT`
PHRASES: dict[str, str] = {}

#: word -> the word whose presence in the caption cancels it
DROP_IF_PRESENT: dict[str, str] = {"chirp": "bird", "sing": "bird", "singing": "bird", "song": "bird"}


@dataclass
class EventVocabulary(ObjectVocabulary):
    """An object vocabulary over sound events, with the phrase each event's question asks about."""

    sounds: dict[str, str] = field(default_factory=dict)

    def sound(self, event: str) -> str:
        """How a yes/no question names ``event``: its phrase, else "a" / "an" and its name."""
        if event in self.sounds:
            return self.sounds[event]
        return f"{'an' if event[:1].lower() in 'aeiou' else 'a'} {event}"

    def known(self, name: str) -> bool:
        """Whether an annotation names an event of this vocabulary (by its name or a synonym)."""
        try:
            self.canonical(name)
        except ConfigError:
            return False
        return True


def _key(form: str) -> str:
    """A surface form as the matcher sees it: lower case, each word made singular."""
    return " ".join(singular(w) for w in form.lower().split())


def built_in(events: dict[str, tuple[str, ...]] = EVENTS) -> EventVocabulary:
    """The vocabulary of ``events`` (default :data:`EVENTS`), :data:`PHRASES`,
    :data:`DROP_IF_PRESENT` and :data:`SOUNDS`; a form claimed by two events is refused."""
    synonyms: dict[str, str] = {}
    for name, others in events.items():
        for form in (name, *others):
            key = _key(form)
            if synonyms.get(key, name) != name:
                raise ValueError(f"'{form}' is a form of both '{synonyms[key]}' and '{name}'")
            synonyms[key] = name
    return EventVocabulary(synonyms, dict(PHRASES), dict(DROP_IF_PRESENT), dict(SOUNDS))


def event_vocabulary(path: str | os.PathLike | None = None) -> EventVocabulary:
    """The built-in event vocabulary, or the one in the JSON file ``path`` (the object
    vocabulary's format, with an optional ``sounds`` map of event -> question phrase)."""
    if path is None:
        return built_in()
    if not Path(path).is_file():
        raise ConfigError(f"event vocabulary '{path}' not found; pass vocabulary=<path to a JSON file with "
                          "'classes': {event: [synonyms]}> or leave it out for the built-in sound events")
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"event vocabulary '{path}' is not valid JSON ({err})") from None
    classes = data.get("classes") if isinstance(data, dict) else None
    if not (isinstance(classes, dict) and classes
            and all(isinstance(v, list) and all(isinstance(s, str) for s in v) for v in classes.values())):
        raise ConfigError(f"event vocabulary '{path}' needs 'classes': a non-empty map of event -> list of "
                          "synonyms, e.g. {\"classes\": {\"dog\": [\"bark\", \"barking\"]}}")
    vocabulary = load_vocabulary(path)
    sounds = data.get("sounds") or {}
    if not (isinstance(sounds, dict) and all(isinstance(v, str) and v.strip() for v in sounds.values())):
        raise ConfigError(f"event vocabulary '{path}': 'sounds' must map each event to a non-empty phrase, "
                          "e.g. {\"dog\": \"a dog barking\"}")
    return EventVocabulary(vocabulary.synonyms, vocabulary.phrases, vocabulary.drop_if_present, dict(sounds))


def mentioned_events(text: str, vocabulary: ObjectVocabulary) -> list[str]:
    """The events ``text`` mentions, each once, in the order of their first mention."""
    return list(dict.fromkeys(vocabulary.mentions(text)))
