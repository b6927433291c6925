"""ModelConfig / GenerationConfig: validation, JSON round-trips, presets."""

from __future__ import annotations

import json
import math

import pytest

from horror.config import MAX_NEW_TOKENS_LIMIT, MODEL_PRESETS, GenerationConfig, ModelConfig, model_preset


def test_model_config_round_trips_through_json(tmp_path):
    config = model_preset("cpu-small", context_length=128)
    config.save(tmp_path / "config.json")
    assert ModelConfig.load(tmp_path / "config.json") == config
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "horror-gpt"


def test_generation_config_round_trips_through_json(tmp_path):
    settings = GenerationConfig(temperature=0.7, top_k=5, seed=3, stop_after_sentences=1, allow_eos=False)
    settings.save(tmp_path / "generation_config.json")
    assert GenerationConfig.load(tmp_path / "generation_config.json") == settings


def test_unknown_model_config_field_is_rejected_with_its_name():
    data = {**ModelConfig().to_dict(), "n_experts": 4}
    with pytest.raises(ValueError, match="n_experts"):
        ModelConfig.from_dict(data)


def test_unknown_generation_setting_is_rejected_with_its_name():
    with pytest.raises(ValueError, match="beam_width"):
        GenerationConfig.from_dict({"beam_width": 4})
    with pytest.raises(ValueError, match="beam_width"):
        GenerationConfig().replace(beam_width=4)


@pytest.mark.parametrize("data", [[], None, "config", 3])
def test_config_json_that_is_not_an_object_is_a_value_error(data):
    with pytest.raises(ValueError, match="JSON object"):
        ModelConfig.from_dict(data)
    with pytest.raises(ValueError, match="JSON object"):
        GenerationConfig.from_dict(data)


@pytest.mark.parametrize(
    "changes",
    [
        {"d_model": 0},
        {"n_layers": -1},
        {"vocab_size": 1.5},
        {"n_heads": True},
        {"d_model": 100, "n_heads": 8},  # not divisible
        {"dropout": 1.0},
        {"dropout": "0.1"},
        {"tie_embeddings": "false"},
    ],
)
def test_invalid_model_shapes_are_rejected(changes):
    with pytest.raises(ValueError):
        ModelConfig(**changes)


def test_model_preset_applies_overrides_and_rejects_unknown_names():
    assert model_preset("test-tiny", vocab_size=400).vocab_size == 400
    assert model_preset("test-tiny") == MODEL_PRESETS["test-tiny"]
    with pytest.raises(ValueError, match="unknown model preset"):
        model_preset("gpt-5")


BAD_SETTINGS = [
    ("temperature", math.nan),
    ("temperature", math.inf),
    ("temperature", -0.1),
    ("temperature", 1e9),
    ("temperature", "hot"),
    ("temperature", [0.5]),
    ("temperature", None),
    ("top_k", -1),
    ("top_k", 1.5),
    ("top_k", 10**12),
    ("top_k", True),
    ("top_p", 0.0),
    ("top_p", 1.5),
    ("top_p", math.nan),
    ("min_p", -0.5),
    ("min_p", 2),
    ("repetition_penalty", 0),
    ("repetition_penalty", -1.0),
    ("repetition_penalty", math.inf),
    ("no_repeat_ngram_size", -2),
    ("no_repeat_ngram_size", 100),
    ("max_new_tokens", 0),
    ("max_new_tokens", MAX_NEW_TOKENS_LIMIT + 1),
    ("max_new_tokens", 10**30),
    ("max_new_tokens", "55"),
    ("seed", -1),
    ("seed", 2**64),
    ("seed", 0.5),
    ("stop_after_sentences", 0),
    ("allow_eos", "yes"),
]


@pytest.mark.parametrize(("name", "value"), BAD_SETTINGS)
def test_out_of_range_or_wrong_type_setting_is_a_value_error_naming_it(name, value):
    with pytest.raises(ValueError, match=name):
        GenerationConfig(**{name: value})


def test_integral_floats_from_json_or_sliders_become_ints():
    settings = GenerationConfig(top_k=30.0, max_new_tokens=20.0, seed=7.0)
    assert (settings.top_k, settings.max_new_tokens, settings.seed) == (30, 20, 7)
    assert all(isinstance(v, int) for v in (settings.top_k, settings.max_new_tokens, settings.seed))


def test_replace_keeps_defaults_for_none_and_validates_the_rest():
    settings = GenerationConfig(temperature=0.9)
    assert settings.replace(temperature=None, top_k=None) == settings
    assert settings.replace(top_k=5).top_k == 5
    with pytest.raises(ValueError, match="top_p"):
        settings.replace(top_p=2.0)
