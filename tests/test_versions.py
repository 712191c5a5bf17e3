from __future__ import annotations

import pytest

from blackwell_compat.versions import in_range, installed_version, release, release_string


@pytest.mark.parametrize(
    ("version", "spec", "expected"),
    [
        ("2.6.0a0+ecf3bae40a", ">=2.6", True),  # NVIDIA container build of 2.6.0
        ("2.6.0", ">=2.6", True),
        ("2.5.1", ">=2.6", False),
        ("2.11.0+cu130", ">=2.6,<3", True),
        ("0.9.4", "==0.9.*", True),
        ("0.10.0", ">=0.9.4,<0.10", False),
        ("1.0.0rc1", ">=1.0", True),
        ("anything", "", True),
        ("not a version", ">=1", False),
    ],
)
def test_in_range_uses_release_tuple(version, spec, expected):
    assert in_range(version, spec) is expected


def test_release_string():
    assert release_string("2.6.0a0+ecf3bae40a") == "2.6.0"
    assert release_string("garbage!") is None


@pytest.mark.parametrize(
    ("version", "expected"),
    [
        ("2.6.0a0+ecf3bae40a", (2, 6, 0)),
        ("2.11.0+cu130", (2, 11, 0)),
        ("4.40.2", (4, 40, 2)),
        ("1.0", (1, 0)),
        ("garbage!", None),
        ("", None),
        (None, None),
    ],
)
def test_release_is_the_numeric_tuple(version, expected):
    assert release(version) == expected
    # Compared as numbers, not text: 2.10 comes after 2.9.
    assert release("2.10.0") > release("2.9.1")  # type: ignore[operator]


def test_installed_version():
    assert installed_version("packaging")
    assert installed_version("no-such-distribution-xyz") is None


@pytest.mark.parametrize(
    ("version", "expected"),
    [
        ("2.6.0a0+ecf3bae40a", (2, 6, 0)),
        ("2.11.0+cu130", (2, 11, 0)),
        ("nonsense", None),
        (None, None),
        ("", None),
    ],
)
def test_release_of_any_form(version, expected):
    assert release(version) == expected


def test_metadata_fields_read_from_the_headers_match_importlib_metadata():
    # The header reader answers what importlib.metadata's full parse answers, for every
    # distribution installed here (the test environment has a few hundred, wheels and
    # editable installs alike).
    from importlib import metadata

    from blackwell_compat.versions import installed_version, metadata_field

    dists = list(metadata.distributions())
    assert len(dists) > 20
    for dist in dists:
        assert metadata_field(dist, "Version") == dist.version, dist
        assert metadata_field(dist, "Name") == dist.name, dist
        assert installed_version(dist.name) == metadata.version(dist.name)
    assert installed_version("no-such-distribution-xyz") is None


def test_metadata_field_falls_back_to_the_distribution_property():
    from blackwell_compat.versions import metadata_field

    class Bare:
        name = "bare"
        version = "1.2"

    assert metadata_field(Bare(), "Version") == "1.2"
    assert metadata_field(Bare(), "Name") == "bare"
