"""Desired-state documents: TOML, YAML, JSON, gzip, and the errors they give (real files)."""

from __future__ import annotations

import gzip
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

from hostcore.documents import (
    DocumentError,
    load_document,
    load_settings,
    parse_document,
    settings_of,
)

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "user-data"

TOML = b"""
# user data
[settings]
motd = "hello from the fleet"

[settings.kubernetes.node-labels]
"team.example.com/owner" = "infra"

[other]
ignored = true
"""
YAML = b"""
settings:
  motd: hello from the fleet
  kubernetes:
    node-labels:
      team.example.com/owner: infra
other:
  ignored: true
"""
JSON = b"""{"settings": {"motd": "hello from the fleet",
  "kubernetes": {"node-labels": {"team.example.com/owner": "infra"}}},
  "other": {"ignored": true}}"""
EXPECTED = {
    "motd": "hello from the fleet",
    "kubernetes": {"node-labels": {"team.example.com/owner": "infra"}},
}


@pytest.mark.parametrize(
    ("data", "name"),
    [(TOML, "user-data.toml"), (YAML, "user-data.yaml"), (YAML, "x.yml"), (JSON, "u.json")],
)
def test_formats_by_extension(tmp_path, data, name):
    path = tmp_path / name
    path.write_bytes(data)
    document = load_document(path)
    assert settings_of(document, name) == EXPECTED
    assert document["other"] == {"ignored": True}


@pytest.mark.parametrize("data", [TOML, YAML, JSON])
def test_formats_sniffed_without_extension(data):
    assert settings_of(parse_document(data, "user-data"), "user-data") == EXPECTED


@pytest.mark.parametrize("data", [TOML, YAML, JSON])
@pytest.mark.parametrize("name", ["user-data", "user-data.gz"])
def test_gzip_detected_by_magic_bytes(data, name):
    packed = gzip.compress(data)
    assert settings_of(parse_document(packed, name), name) == EXPECTED


@pytest.mark.parametrize(("data", "name"), [(TOML, "u.toml.gz"), (YAML, "u.YAML.GZ")])
def test_gzip_with_format_extension(tmp_path, data, name):
    path = tmp_path / name
    path.write_bytes(gzip.compress(data))
    assert settings_of(load_document(path), name) == EXPECTED


def test_gzip_concatenated_members():
    packed = gzip.compress(b"[settings]\n") + gzip.compress(b'motd = "x"\n')
    assert parse_document(packed, "u.toml") == {"settings": {"motd": "x"}}


def test_extension_wins_over_sniffing():
    # valid YAML but not TOML: the .toml name makes it a TOML error
    with pytest.raises(DocumentError) as caught:
        parse_document(YAML, "user-data.toml")
    assert str(caught.value).startswith("user-data.toml: invalid TOML")


def test_bad_gzip_names_the_file():
    with pytest.raises(DocumentError, match=r"^u\.toml\.gz: truncated gzip data"):
        parse_document(gzip.compress(TOML)[:-12], "u.toml.gz")
    with pytest.raises(DocumentError, match=r"^u: invalid gzip data"):
        parse_document(b"\x1f\x8b" + b"garbage" * 4, "u")


@pytest.mark.parametrize(
    ("data", "name", "words"),
    [
        (b"[settings\nmotd = 1\n", "bad.toml", "line 1, column 10"),
        (b"settings:\n  motd: [x\n", "bad.yaml", "line 3"),
        (b'{"settings": {"motd": }}', "bad.json", "line 1, column 23"),
        (b"[settings\n  : : -", "user-data", "neither TOML"),
    ],
)
def test_parse_errors_name_the_file_and_the_place(tmp_path, data, name, words):
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(DocumentError) as caught:
        load_document(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: ")
    assert words in message
    assert caught.value.origin == str(path)


def test_json_duplicate_keys_and_non_json_numbers_are_refused():
    with pytest.raises(DocumentError, match="duplicate key 'motd'"):
        parse_document(b'{"settings": {"motd": "a", "motd": "b"}}', "u.json")
    with pytest.raises(DocumentError, match="NaN"):
        parse_document(b'{"settings": {"x": NaN}}', "u.json")


def test_yaml_duplicate_keys_and_streams_are_refused():
    with pytest.raises(DocumentError, match="duplicate key"):
        parse_document(b"settings:\n  motd: a\n  motd: b\n", "u.yaml")
    with pytest.raises(DocumentError, match="2 YAML documents"):
        parse_document(b"settings: {}\n---\nsettings: {}\n", "u.yaml")


@pytest.mark.parametrize(
    ("data", "name", "words"),
    [
        (
            b"settings:\n  gitops:\n    ref: 2024-01-01\n",
            "u.yaml",
            "settings.gitops.ref: 2024-01-01",
        ),
        (b"[settings.gitops]\nref = 2024-01-01T10:00:00Z\n", "u.toml", "settings.gitops.ref"),
        (b"[settings]\nmotd = 07:32:00\n", "u.toml", "settings.motd: 07:32:00"),
        (b"settings:\n  ntp:\n    time-servers: [2024-01-01]\n", "u.yaml", "time-servers[0]"),
        (b"settings:\n  x: .inf\n", "u.yaml", "settings.x: inf is not a JSON number"),
        (b"settings:\n  node-labels:\n    1: a\n", "u.yaml", "the name 1 is not a string"),
        (b"settings:\n  ? [a, b]\n  : 1\n", "u.yaml", ""),
    ],
)
def test_non_json_values_are_refused_naming_the_key(data, name, words):
    with pytest.raises(DocumentError) as caught:
        parse_document(data, name)
    assert str(caught.value).startswith(f"{name}: ")
    assert words in str(caught.value)


def test_yaml_values_become_plain_json_types():
    document = parse_document(
        b"settings:\n  a: 1\n  b: 1.5\n  c: true\n  d: null\n  e: [x, 2]\n  f: '10.0.0.1'\n",
        "u.yaml",
    )
    settings = document["settings"]
    assert settings == {"a": 1, "b": 1.5, "c": True, "d": None, "e": ["x", 2], "f": "10.0.0.1"}
    assert [type(v) for v in settings.values()] == [int, float, bool, type(None), list, str]
    assert type(document) is dict and type(settings["e"][0]) is str


@pytest.mark.parametrize(
    ("data", "name", "words"),
    [
        (b"- a\n- b\n", "u.yaml", "not a list"),
        (b"", "u.yaml", "not nothing"),
        (b"just text", "u.yaml", "not a str"),
        (b"[1, 2]", "u.json", "not a list"),
    ],
)
def test_top_level_must_be_a_table(data, name, words):
    with pytest.raises(DocumentError, match=words):
        parse_document(data, name)


def test_not_utf8():
    with pytest.raises(DocumentError, match="^u.toml: not UTF-8"):
        parse_document(b"[settings]\nmotd = '\xff'\n", "u.toml")
    # a UTF-8 byte order mark is fine
    assert parse_document(b"\xef\xbb\xbf[settings]\n", "u.toml") == {"settings": {}}


def test_settings_of():
    assert settings_of({"settings": {"motd": "x"}, "meta": 1}, "o") == {"motd": "x"}
    assert settings_of({"settings": {}}, "o") == {}
    with pytest.raises(DocumentError) as caught:
        settings_of({"setting": {"motd": "x"}}, "u.toml")
    assert str(caught.value) == "u.toml: no top-level 'settings' table"
    with pytest.raises(DocumentError, match="^u.yaml: 'settings' must be a table"):
        settings_of({"settings": ["motd"]}, "u.yaml")


def test_missing_file_names_it(tmp_path):
    path = tmp_path / "nope.toml"
    with pytest.raises(DocumentError) as caught:
        load_document(path)
    assert str(caught.value).startswith(f"{path}: ")
    assert "No such file" in str(caught.value)


def test_load_settings_keeps_order_and_origins(tmp_path):
    first, second = tmp_path / "a.toml", tmp_path / "b.yaml"
    first.write_bytes(b'[settings]\nmotd = "first"\n')
    second.write_bytes(b"settings:\n  motd: second\n")
    assert load_settings([first, str(second)]) == [
        (str(first), {"motd": "first"}),
        (str(second), {"motd": "second"}),
    ]
    with pytest.raises(DocumentError, match="no top-level 'settings'"):
        (tmp_path / "c.toml").write_bytes(b"motd = 1\n")
        load_settings([first, tmp_path / "c.toml"])


def test_stdin_is_dash():
    code = (
        "import json; from hostcore.documents import load_settings, load_document;"
        "print(json.dumps(load_settings(['-'])))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        input=gzip.compress(YAML),
        capture_output=True,
        check=True,
    )
    assert result.stdout.decode().strip() == (
        '[["<stdin>", {"motd": "hello from the fleet", '
        '"kubernetes": {"node-labels": {"team.example.com/owner": "infra"}}}]]'
    )


def test_examples_parse():
    for path in sorted(EXAMPLES.glob("*.*")):
        if path.suffix in (".toml", ".yaml"):
            assert settings_of(load_document(path), str(path))


def test_document_error_pickles():
    error = DocumentError("u.yaml", "bad", line=3, column=4)
    again = pickle.loads(pickle.dumps(error))
    assert str(again) == str(error) == "u.yaml: line 3, column 4: bad"
    assert isinstance(again, ValueError)
