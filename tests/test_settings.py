"""Settings: precedence, value syntax, errors naming the key, secrets, and settings.yaml."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import yaml

from tornado_auth.settings import SCHEMA, SettingsError, load_settings, parse_duration, parse_size

SETTINGS_YAML = Path(__file__).parent.parent / "settings.yaml"
SECRET = "s" * 32


def write_yaml(tmp_path: Path, tree: Any) -> Path:
    path = tmp_path / "settings.yaml"
    path.write_text(yaml.safe_dump(tree))
    return path


def defaults() -> dict[str, Any]:
    return {path: parser(default) for path, (default, parser) in SCHEMA.items()}


# Precedence: defaults < YAML file < environment < explicit overrides.


def test_without_file_or_environment_every_setting_is_its_default():
    assert dict(load_settings(environ={}).values) == defaults()


def test_file_then_environment_then_overrides_each_win_over_the_one_before(tmp_path: Path):
    config = write_yaml(
        tmp_path,
        {
            "server": {"host": "0.0.0.0", "port": 1000},
            "sessions": {"ttl": "2h", "cookie_name": "sid"},
        },
    )
    environ = {"TORNADO_AUTH_SERVER__PORT": "2000", "TORNADO_AUTH_SESSIONS__TTL": "3h"}

    settings = load_settings(config, environ=environ, overrides={"server.port": 3000})

    assert settings["server.port"] == 3000  # override > environment > file
    assert settings["sessions.ttl"] == 3 * 3600  # environment > file
    assert settings["server.host"] == "0.0.0.0"  # file > default
    assert settings["sessions.cookie_name"] == "sid"
    assert settings["sessions.remember_me_ttl"] == 30 * 86400  # untouched default


def test_an_override_of_none_leaves_the_lower_layers_alone(tmp_path: Path):
    config = write_yaml(tmp_path, {"server": {"port": 1000}})

    settings = load_settings(config, environ={}, overrides={"server.port": None})

    assert settings["server.port"] == 1000


def test_the_config_file_can_be_named_in_the_environment(tmp_path: Path):
    config = write_yaml(tmp_path, {"server": {"port": 1000}})
    other = tmp_path / "other.yaml"
    other.write_text("server:\n  port: 4000\n")
    environ = {"TORNADO_AUTH_CONFIG": str(config)}

    assert load_settings(environ=environ)["server.port"] == 1000
    assert load_settings(other, environ=environ)["server.port"] == 4000


def test_environment_values_are_typed_like_yaml():
    environ = {
        "TORNADO_AUTH_SERVER__XHEADERS": "true",
        "TORNADO_AUTH_SERVER__PROCESSES": "4",
        "TORNADO_AUTH_SERVER__TRUSTED_ORIGINS": "https://a.example, https://b.example",
        "TORNADO_AUTH_LOGGING__LEVEL": "debug",
    }

    settings = load_settings(environ=environ)

    assert settings["server.xheaders"] is True
    assert settings["server.processes"] == 4
    assert settings["server.trusted_origins"] == ["https://a.example", "https://b.example"]
    assert settings["logging.level"] == "DEBUG"


def test_environment_names_without_the_prefix_are_ignored():
    environ = {"PATH": "/bin", "TORNADO_AUTHOR": "x", "SERVER__PORT": "abc"}

    assert dict(load_settings(environ=environ).values) == defaults()


@pytest.mark.parametrize(
    ("name", "path", "text"),
    [
        ("TORNADO_AUTH_SESSIONS__KEY_PREFIX", "sessions.key_prefix", "myapp:"),
        ("TORNADO_AUTH_SESSIONS__COOKIE_NAME", "sessions.cookie_name", "0x1F"),
        ("TORNADO_AUTH_SECRETS__COOKIE_SECRET", "secrets.cookie_secret", "1234_5678" * 4),
        ("TORNADO_AUTH_SECRETS__COOKIE_SECRET", "secrets.cookie_secret", "01234567" * 4),
        ("TORNADO_AUTH_SECRETS__SECRET_FILE", "secrets.secret_file", "yes"),
    ],
    ids=["trailing-colon", "hex-looking", "underscored-digits", "leading-zero", "yes"],
)
def test_string_settings_from_the_environment_keep_their_exact_text(
    name: str, path: str, text: str
):
    assert load_settings(environ={name: text})[path] == text


def test_metrics_can_be_turned_off_from_the_environment_and_from_yaml(tmp_path: Path):
    # "off" is a boolean to YAML: it must still mean off, in either layer
    assert load_settings(environ={"TORNADO_AUTH_METRICS__LISTEN": "off"})["metrics.listen"] == "off"
    config = tmp_path / "settings.yaml"
    config.write_text("metrics:\n  listen: off\n")
    assert load_settings(config, environ={})["metrics.listen"] == "off"


# Durations and sizes.


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("90s", 90),
        ("24h", 86400),
        ("30d", 30 * 86400),
        ("2w", 14 * 86400),
        ("10m", 600),
        ("500ms", 0.5),
        ("1.5h", 5400),
        (" 15 m ", 900),
        (3600, 3600),
        (1.5, 1.5),
        ("3600", 3600),
    ],
)
def test_durations_are_read_in_seconds(value: Any, seconds: float):
    assert parse_duration(value) == seconds
    assert load_settings(environ={}, overrides={"sessions.ttl": value})["sessions.ttl"] == seconds
    environ = {"TORNADO_AUTH_SESSIONS__TTL": str(value)}
    assert load_settings(environ=environ)["sessions.ttl"] == seconds


@pytest.mark.parametrize(
    ("value", "size"),
    [("64KiB", 65536), ("64kib", 65536), ("1MiB", 1024**2), ("64kB", 64000), (1024, 1024)],
)
def test_sizes_are_read_in_bytes(value: Any, size: int):
    assert parse_size(value) == size
    environ = {"TORNADO_AUTH_SERVER__MAX_BODY_SIZE": str(value)}
    assert load_settings(environ=environ)["server.max_body_size"] == size


def test_the_default_durations_and_size_are_parsed():
    settings = load_settings(environ={})

    assert settings["sessions.ttl"] == 86400
    assert settings["sessions.remember_me_ttl"] == 30 * 86400
    assert settings["sessions.touch_interval"] == 60
    assert settings["server.max_body_size"] == 65536


def test_a_zero_touch_interval_is_allowed():
    settings = load_settings(environ={}, overrides={"sessions.touch_interval": "0s"})

    assert settings["sessions.touch_interval"] == 0


# Invalid values: SettingsError whose message starts with the key path.


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("sessions.ttl", "ten minutes"),
        ("sessions.ttl", "5 parsecs"),
        ("sessions.ttl", "-5s"),
        ("sessions.ttl", -1),
        ("sessions.ttl", 0),
        ("sessions.ttl", "0s"),
        ("sessions.ttl", True),
        ("sessions.ttl", ""),
        ("sessions.absolute_ttl", "0"),
        ("sessions.touch_interval", "soon"),
        ("server.max_body_size", "64 potatoes"),
        ("server.max_body_size", "1.5MiB"),
        ("server.max_body_size", 0),
        ("server.max_body_size", -1),
        ("server.port", "abc"),
        ("server.port", 70000),
        ("server.port", 80.5),
        ("server.processes", -1),
        ("server.xheaders", "maybe"),
        ("env", "staging"),
        ("sessions.samesite", "none"),
        ("sessions.url", "http://example.com"),
        ("users.url", "postgres://db"),
        ("users.bcrypt_rounds", 3),
        ("users.bcrypt_rounds", 21),
        ("logging.level", "verbose"),
        ("sessions.cookie_name", ["a", "b"]),
        ("server.trusted_origins", 42),
        ("server.event_loop", "trio"),
    ],
)
def test_an_invalid_value_names_its_key(path: str, value: Any):
    with pytest.raises(SettingsError) as error:
        load_settings(environ={}, overrides={path: value})

    assert str(error.value).startswith(f"{path}: ")


@pytest.mark.parametrize("path", ["server.port", "sessions.ttl", "server.max_body_size"])
def test_an_invalid_environment_value_names_its_key(path: str):
    name = "TORNADO_AUTH_" + path.upper().replace(".", "__")

    with pytest.raises(SettingsError) as error:
        load_settings(environ={name: "abc"})

    assert str(error.value).startswith(f"{path}: ")


@pytest.mark.parametrize("value", [math.nan, math.inf, ".nan", ".inf"])
def test_a_duration_must_be_a_finite_number(value: Any):
    if isinstance(value, str):
        load = {"environ": {"TORNADO_AUTH_SESSIONS__TTL": value}}
    else:
        load = {"environ": {}, "overrides": {"sessions.ttl": value}}

    with pytest.raises(SettingsError, match=r"^sessions\.ttl: "):
        load_settings(**load)


def test_an_invalid_value_in_the_file_names_its_key(tmp_path: Path):
    config = write_yaml(tmp_path, {"sessions": {"ttl": "a while"}})

    with pytest.raises(SettingsError, match=r"^sessions\.ttl: "):
        load_settings(config, environ={})


@pytest.mark.parametrize(
    ("tree", "path"),
    [
        ({"server": {"prot": 8080}}, "server.prot"),
        ({"sesions": {"ttl": "1h"}}, "sesions.ttl"),
        ({"debug": True}, "debug"),
        ({"server": 8080}, "server"),
    ],
)
def test_an_unknown_key_in_the_file_is_an_error(tmp_path: Path, tree: Any, path: str):
    config = write_yaml(tmp_path, tree)

    with pytest.raises(SettingsError) as error:
        load_settings(config, environ={})

    assert str(error.value).startswith(f"{path}: ")
    assert "unknown" in str(error.value)


@pytest.mark.parametrize(
    "name",
    [
        "TORNADO_AUTH_SERVER__PROT",
        "TORNADO_AUTH_SERVER_PORT",
        "TORNADO_AUTH_SERVER",
        "TORNADO_AUTH_",
    ],
)
def test_an_unknown_environment_name_is_an_error(name: str):
    with pytest.raises(SettingsError) as error:
        load_settings(environ={name: "1"})

    assert str(error.value).startswith(name)
    assert "unknown" in str(error.value)


@pytest.mark.parametrize(
    ("text", "problem"),
    [("server: [port\n", "not valid YAML"), ("- a\n- b\n", "mapping")],
)
def test_an_unreadable_file_is_an_error_naming_config(tmp_path: Path, text: str, problem: str):
    config = tmp_path / "settings.yaml"
    config.write_text(text)

    with pytest.raises(SettingsError, match=r"^config: ") as error:
        load_settings(config, environ={})

    assert problem in str(error.value)


def test_a_missing_file_is_an_error_naming_config(tmp_path: Path):
    with pytest.raises(SettingsError, match=r"^config: cannot read"):
        load_settings(tmp_path / "absent.yaml", environ={})


def test_an_empty_file_means_the_defaults(tmp_path: Path):
    config = tmp_path / "settings.yaml"
    config.write_text("# nothing set\n")

    assert dict(load_settings(config, environ={}).values) == defaults()


# Production and secrets.


@pytest.mark.parametrize(
    "secret",
    ["", "s" * 31, "é" * 15 + "s"],
    ids=["missing", "31-bytes", "31-bytes-in-16-characters"],
)
def test_production_requires_a_cookie_secret_of_32_bytes(secret: str):
    environ = {"TORNADO_AUTH_ENV": "production", "TORNADO_AUTH_SECRETS__COOKIE_SECRET": secret}

    with pytest.raises(SettingsError, match=r"^secrets\.cookie_secret: .*32 bytes"):
        load_settings(environ=environ)


@pytest.mark.parametrize("secret", ["s" * 32, "é" * 16, "s" * 64], ids=["32", "32-utf8", "64"])
def test_production_accepts_a_cookie_secret_of_32_bytes_or_more(secret: str):
    settings = load_settings(
        environ={}, overrides={"env": "production", "secrets.cookie_secret": secret}
    )

    assert settings.production
    assert settings["secrets.cookie_secret"] == secret


def test_development_needs_no_configured_secret():
    settings = load_settings(environ={})

    assert not settings.production
    assert settings["secrets.cookie_secret"] == ""


def test_a_versioned_secret_from_the_file_with_its_key_version(tmp_path: Path):
    config = tmp_path / "settings.yaml"
    config.write_text(
        f"env: production\nsecrets:\n  cookie_secret:\n    1: {'a' * 32}\n    2: {'b' * 32}\n"
        "  key_version: 2\n"
    )

    settings = load_settings(config, environ={})

    assert settings["secrets.cookie_secret"] == {1: "a" * 32, 2: "b" * 32}
    assert settings["secrets.key_version"] == 2


def test_a_versioned_secret_from_the_environment():
    environ = {
        "TORNADO_AUTH_SECRETS__COOKIE_SECRET": f"{{1: {'a' * 32}, 2: {'b' * 32}}}",
        "TORNADO_AUTH_SECRETS__KEY_VERSION": "1",
    }

    settings = load_settings(environ=environ)

    assert settings["secrets.cookie_secret"] == {1: "a" * 32, 2: "b" * 32}
    assert settings["secrets.key_version"] == 1


@pytest.mark.parametrize("version", [None, 3, 0], ids=["missing", "unknown", "zero"])
def test_a_versioned_secret_requires_key_version_to_name_one_of_its_versions(version):
    overrides = {"secrets.cookie_secret": {1: SECRET, 2: SECRET}, "secrets.key_version": version}

    with pytest.raises(SettingsError, match=r"^secrets\.key_version: "):
        load_settings(environ={}, overrides=overrides)


def test_production_requires_every_versioned_secret_to_be_32_bytes():
    overrides = {
        "env": "production",
        "secrets.cookie_secret": {1: "short", 2: SECRET},
        "secrets.key_version": 2,
    }

    with pytest.raises(SettingsError, match=r"^secrets\.cookie_secret: "):
        load_settings(environ={}, overrides=overrides)


@pytest.mark.parametrize(
    "secret", [{}, {"one": SECRET}], ids=["empty-mapping", "non-integer-version"]
)
def test_a_malformed_versioned_secret_is_an_error(secret: dict):
    with pytest.raises(SettingsError, match=r"^secrets\.cookie_secret: "):
        load_settings(environ={}, overrides={"secrets.cookie_secret": secret})


# The repository's settings.yaml documents exactly the schema, with the code's defaults.


def _leaves(node: yaml.MappingNode, prefix: str = "") -> dict[str, tuple[yaml.Node, yaml.Node]]:
    """Each setting in a composed YAML tree: path -> (key node, value node)."""
    leaves = {}
    for key, value in node.value:
        path = prefix + key.value
        if isinstance(value, yaml.MappingNode) and path not in SCHEMA:
            leaves.update(_leaves(value, path + "."))
        else:
            leaves[path] = (key, value)
    return leaves


@pytest.fixture(scope="module")
def settings_yaml() -> str:
    assert SETTINGS_YAML.is_file(), f"{SETTINGS_YAML} is missing"
    return SETTINGS_YAML.read_text()


def test_settings_yaml_holds_exactly_the_schema_keys(settings_yaml: str):
    leaves = set(_leaves(yaml.compose(settings_yaml)))

    assert leaves - set(SCHEMA) == set(), "keys settings.yaml has but the schema lacks"
    assert set(SCHEMA) - leaves == set(), "schema keys settings.yaml lacks"


def _values(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Each setting in a loaded YAML tree: path -> value."""
    values = {}
    for key, value in tree.items():
        path = prefix + str(key)
        if isinstance(value, dict) and path not in SCHEMA:
            values.update(_values(value, path + "."))
        else:
            values[path] = value
    return values


def test_settings_yaml_holds_the_code_defaults(settings_yaml: str):
    values = _values(yaml.safe_load(settings_yaml))

    differences = {
        path: (values[path], default)
        for path, (default, parser) in SCHEMA.items()
        if path in values and parser(values[path]) != parser(default)
    }
    assert differences == {}


def test_settings_yaml_loads_to_the_defaults():
    assert dict(load_settings(SETTINGS_YAML, environ={}).values) == defaults()


def test_settings_yaml_comments_every_key(settings_yaml: str):
    lines = settings_yaml.splitlines()
    uncommented = []
    for path, (key, value) in _leaves(yaml.compose(settings_yaml)).items():
        line = key.start_mark.line
        above = lines[line - 1].strip() if line > 0 else ""
        end = value.end_mark
        after = lines[line][end.column :] if end.line == line else ""
        if not above.startswith("#") and not after.strip().startswith("#"):
            uncommented.append(path)

    assert uncommented == []
