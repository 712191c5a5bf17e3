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


# -- accepted forms, strictly (issue 14, point 14) ---------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("SM_121", "sm_121"), ("sm_121\n", "sm_121"), ("sm_121f", "sm_121"), ("sm_30", "sm_30")],
)
def test_arch_normalisation_that_is_documented(raw, expected):
    assert config.emulated_arch_from_env({config.EMULATE: raw}) == expected


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        ("sm_999", "compute capability 99.9, which no NVIDIA GPU has"),
        ("sm_12", "compute capability 1.2, which no NVIDIA GPU has"),
        ("sm_\u0661\u0662\u0661", "is not a GPU architecture"),  # Arabic-Indic digits
        ("\uff11\uff12\uff11", "is not a GPU architecture"),  # full-width digits
        ("\u0661\u0662.\u0661", "is not a GPU architecture"),
        ("sm_121b", "is not a GPU architecture"),
        ("sm_121 a", "is not a GPU architecture"),
        ("99.0", "compute capability 99.0"),
    ],
)
def test_arch_that_names_no_gpu_is_refused_with_the_forms(raw, needle):
    with pytest.raises(ConfigError, match=needle) as info:
        config.emulated_arch_from_env({config.EMULATE: raw})
    assert "BLACKWELL_COMPAT_EMULATE" in str(info.value)
    assert "'sm_121'" in str(info.value)


def test_parse_arch_refuses_a_non_string():
    with pytest.raises(TypeError, match="expected a str"):
        config.parse_arch(121)  # type: ignore[arg-type]


def test_strategy_given_twice_is_refused_even_with_the_same_value():
    for raw in ("torchaudio=cpu,torchaudio=real", "torchaudio=cpu, torchaudio = cpu"):
        with pytest.raises(ConfigError, match="patch 'torchaudio' is given twice"):
            config.strategies_from_env({config.STRATEGY: raw})


def test_strategy_names_are_plain_names():
    for raw in ("torchaudio=cpu=x", "torch audio=cpu", "torchaudio=c\u00e9"):
        with pytest.raises(ConfigError, match="malformed"):
            config.strategies_from_env({config.STRATEGY: raw})


def test_disable_all_stands_alone():
    with pytest.raises(ConfigError, match="'all' disables every patch and cannot be combined"):
        config.disabled_names({config.DISABLE: "all,nope"})
    assert config.disabled_names({config.DISABLE: "torch,torch"}) == ("torch",)


def test_environment_problems_lists_each_once():
    patches = {"torchaudio": ("cpu", "real"), "torch": ()}
    env = {
        config.EMULATE: "sm_999",
        config.DISABLE: "nope",
        config.STRATEGY: "torchaudio=gpu",
        config.AUTO: "maybe",
        config.FORCE: "1",
    }
    problems = config.environment_problems(patches, env)
    assert len(problems) == 4, problems
    assert "sm_999" in problems[0]
    assert "'nope'" in problems[1]
    assert "no strategy 'gpu'" in problems[2]
    assert "BLACKWELL_COMPAT_AUTO='maybe' is not a boolean" in problems[3]
    assert config.environment_problems(patches, {config.DISABLE: "all"}) == []


@pytest.mark.parametrize("raw", ["soon", "0", "-5", "nan", "1e9"])
def test_a_probe_timeout_that_is_no_positive_number_is_a_problem(raw):
    problems = config.environment_problems({}, {config.PROBE_TIMEOUT: raw})
    assert problems == [
        f"{config.PROBE_TIMEOUT}={raw!r}: expected a positive number of seconds such as '20'"
    ]
    assert config.environment_problems({}, {config.PROBE_TIMEOUT: " 7.5 "}) == []


def test_verbose_is_a_strict_boolean():
    # Issue 22: BLACKWELL_COMPAT_VERBOSE, read by the start-up activation and the command line.
    assert config.VERBOSE in config.ALL_VARIABLES
    assert config.environment_problems({}, {config.VERBOSE: " On "}) == []
    assert config.environment_problems({}, {config.VERBOSE: "0"}) == []
    (problem,) = config.environment_problems({}, {config.VERBOSE: "loud"})
    assert problem == (
        "BLACKWELL_COMPAT_VERBOSE='loud' is not a boolean; use 1/0, true/false, yes/no or on/off"
    )


@pytest.mark.parametrize(
    ("raw", "expected"), [("cuda", "cuda"), (" CUDA ", "cuda"), ("cpu", "cpu")]
)
def test_emulated_device_forms(raw, expected):
    assert config.parse_emulated_device(raw) == expected
    assert config.emulated_device_from_env({config.EMULATE_DEVICE: raw}) == expected


def test_emulated_device_defaults_to_cpu_and_refuses_others_naming_the_accepted():
    assert config.emulated_device_from_env({}) == "cpu"
    assert config.EMULATE_DEVICE in config.ALL_VARIABLES
    for bad in ("gpu", "cuda:0", "mps", "1"):
        with pytest.raises(ConfigError, match="accepted: 'cpu', 'cuda'"):
            config.emulated_device_from_env({config.EMULATE_DEVICE: bad})
    with pytest.raises(TypeError, match="expected a str"):
        config.parse_emulated_device(0)
    problems = config.environment_problems({}, {config.EMULATE_DEVICE: "gpu"})
    assert len(problems) == 1 and config.EMULATE_DEVICE in problems[0]
