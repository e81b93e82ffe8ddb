"""The core's side of the plugin contract: one needs check, draws per epoch, seeds of the
sample hook, a plugin's pydantic options, namespaced dataset schemas."""
from __future__ import annotations

import pydantic
import pytest

from mmalign import config, registry
from mmalign.errors import ConfigError
from mmalign.modality import check_needs, draws_per_epoch, normalize_seeds


class Plugin:
    supported_needs = frozenset({"token_logps", "terms:chosen|condition=corrupted"})


def test_one_needs_rule():
    check_needs(Plugin(), frozenset({"token_logps", "fields:margin", "terms:chosen|condition=corrupted"}), "p")
    with pytest.raises(ConfigError, match="modality 'p' cannot provide hidden, terms:kl_mismatched"):
        check_needs(Plugin(), frozenset({"hidden", "terms:kl_mismatched", "fields:x"}), "p")

    class AnyTerm:
        supported_needs = frozenset({"terms:*"})

    check_needs(AnyTerm(), frozenset({"terms:anything"}), "any")


def test_draws_per_epoch_is_true_unless_declared():
    assert draws_per_epoch(Plugin(), frozenset()) is True

    class Declares:
        def draws_per_epoch(self, needs):
            return "terms:x" in needs

    assert draws_per_epoch(Declares(), frozenset()) is False
    assert draws_per_epoch(Declares(), frozenset({"terms:x"})) is True


def test_seeds_one_per_prompt():
    assert normalize_seeds(5, 3) == [5, 6, 7]
    assert normalize_seeds([9, 1], 2) == [9, 1]
    with pytest.raises(ConfigError, match="got 1 seeds for 2 prompts"):
        normalize_seeds([1], 2)


class Options(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")
    width: int = pydantic.Field(8, gt=0)


def test_plugin_options_are_validated_and_named():
    assert config.validate_options(Options, {"width": 3}, "p") == {"width": 3}
    with pytest.raises(ConfigError, match=r"model.options.width: Input should be greater than 0 \(got -1\)"):
        config.validate_options(Options, {"width": -1}, "p")
    with pytest.raises(ConfigError, match=r"model.options.colour: Extra inputs are not permitted"):
        config.validate_options(Options, {"colour": "red"}, "p")


def test_schemas_are_namespaced_and_a_bare_name_finds_its_one_schema(restore_registries):
    from mmalign.data import schemas

    assert registry.datasets.get("text:preference") is schemas.preference
    assert registry.datasets.get("preference") is schemas.preference

    def other(row, where):
        return [row]

    registry.datasets.register("video:preference", other)
    with pytest.raises(ConfigError, match="'preference' is ambiguous: text:preference, video:preference"):
        registry.datasets.get("preference")
    assert registry.datasets.get("video:preference") is other
