from __future__ import annotations

import pytest

from blackwell_compat import config
from blackwell_compat.errors import ConfigError


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("sm_121", "sm_121"),
        ("121", "sm_121"),
        ("12.1", "sm_121"),
        (" SM_90 ", "sm_90"),
        ("sm_121a", "sm_121"),
        ("8.6", "sm_86"),
        ("sm_103", "sm_103"),
    ],
)
def test_parse_arch_forms(raw, expected):
    assert config.parse_arch(raw) == expected


@pytest.mark.parametrize("raw", ["", "gb10", "sm_", "sm_1", "compute_90", "12.10", "sm-121"])
def test_parse_arch_rejects_garbage_with_the_accepted_forms(raw):
    with pytest.raises(ConfigError, match="sm_121"):
        config.parse_arch(raw)


def test_capability_round_trip():
    assert config.arch_to_capability("sm_121") == (12, 1)
    assert config.capability_to_arch(9, 0) == "sm_90"
    assert config.arch_to_capability("sm_90") == (9, 0)


def test_emulate_env():
    assert config.emulated_arch_from_env({}) is None
    assert config.emulated_arch_from_env({config.EMULATE: "0"}) is None
    assert config.emulated_arch_from_env({config.EMULATE: "sm_120"}) == "sm_120"
    with pytest.raises(ConfigError, match="BLACKWELL_COMPAT_EMULATE"):
        config.emulated_arch_from_env({config.EMULATE: "blackwell"})


def test_disable_list():
    assert config.disabled_names({config.DISABLE: " torch, kokoro ,,"}) == ("torch", "kokoro")
    assert config.disabled_names({config.DISABLE: "all"}) == ("all",)
    assert config.disabled_names({}) == ()
    with pytest.raises(ConfigError, match="not a valid patch name"):
        config.disabled_names({config.DISABLE: "torch;kokoro"})


def test_strategy_env():
    env = {config.STRATEGY: "torchaudio=cpu, kokoro = disable_complex"}
    assert config.strategies_from_env(env) == {"torchaudio": "cpu", "kokoro": "disable_complex"}
    for bad in ("torchaudio", "=cpu", "torchaudio="):
        with pytest.raises(ConfigError, match="malformed"):
            config.strategies_from_env({config.STRATEGY: bad})


def test_parse_bool():
    assert config.parse_bool(config.AUTO, {config.AUTO: "1"}) is True
    assert config.parse_bool(config.AUTO, {config.AUTO: "off"}) is False
    assert config.parse_bool(config.AUTO, {}) is False
    with pytest.raises(ConfigError, match="not a boolean"):
        config.parse_bool(config.AUTO, {config.AUTO: "maybe"})


def test_check_known_names_the_bad_and_the_known():
    with pytest.raises(ConfigError) as info:
        config.check_known(["torch", "kokro"], ["torch", "kokoro"], source="apply(only=...)")
    text = str(info.value)
    assert "'kokro'" in text and "kokoro, torch" in text and "apply(only=...)" in text
    assert isinstance(info.value, ValueError)
