"""The Config dataclass: defaults, one-line validation errors, JSON round trip."""

import json

import pytest

from common_definitions import MODEL_FIELDS, Config


def test_defaults_are_consistent():
    config = Config()
    assert config.input_shape == (64, 256, 1)
    assert config.dims == 64 * 256
    assert config.patch_samples == 63 * config.hop_length + config.n_fft
    assert Config(feature="waveform").input_shape == (4096, 1, 1)


def test_json_round_trip(tmp_path):
    config = Config(k_glow=3, data_dirs=["a", "b"], feature="waveform", window_size=512)
    path = tmp_path / "config.json"
    config.save(str(path))
    assert Config.load(str(path)) == config
    assert json.loads(path.read_text())["k_glow"] == 3


@pytest.mark.parametrize("changes,match", [
    (dict(feature="mel"), "feature must be one of"),
    (dict(k_glow=0), "k_glow must be a positive integer"),
    (dict(learning_rate=-1.0), "learning_rate must be a positive finite number"),
    (dict(learning_rate=float("inf")), "learning_rate must be a positive finite number"),
    (dict(temperature=float("nan")), "temperature must be a finite number"),
    (dict(seed=-1), "seed must be an integer"),
    (dict(window_size=60), "does not divide by 2\\*\\*l_glow=8"),
    (dict(n_fft=512), "257 frequency bins"),
    (dict(channel_size=2), "channel_size must be 1"),
    (dict(feature="waveform", window_size=100, channel_size=3), "multiple of channel_size"),
    (dict(hop_length=1024), "hop_length"),
])
def test_bad_values_raise_one_line_value_errors(changes, match):
    with pytest.raises(ValueError, match=match) as info:
        Config(**changes)
    assert "\n" not in str(info.value)


def test_unknown_fields_are_refused():
    with pytest.raises(ValueError, match="unknown Config fields"):
        Config.from_dict({"k_glow": 2, "kglow": 3})


def test_incompatibilities_name_the_model_fields():
    ours, theirs = Config(k_glow=3), Config(k_glow=2, epochs=99)
    assert ours.incompatibilities(theirs) == ["k_glow=2 (now 3)"]


def test_every_field_is_described_and_model_fields_come_from_the_metadata():
    import dataclasses

    for field in dataclasses.fields(Config):
        assert field.metadata["help"] and not field.metadata["help"].endswith("."), field.name
    assert MODEL_FIELDS == (
        "feature", "sampling_rate", "n_fft", "hop_length", "window_size", "channel_size",
        "world_dims", "world_f0", "k_glow", "l_glow", "hidden_channels", "coupling",
        "lu_decomposed", "scale_shift", "conditional", "singer_dims", "singer_norm", "parallel",
    )
    assert MODEL_FIELDS == tuple(f.name for f in dataclasses.fields(Config) if f.metadata["model"])
