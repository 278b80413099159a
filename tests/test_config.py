"""Settings: defaults, ``ORDERLOG_*`` variables, overrides (flags) winning, bad values named."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import pytest

from orderlog.config import Settings, auto_processes, env_name, load_settings, settings_fields
from orderlog.domain.errors import ValidationError


def problems(env: dict[str, str] | None = None, **overrides: Any) -> dict[str, str]:
    """The field -> message of the ValidationError that loading these values must raise."""
    with pytest.raises(ValidationError) as caught:
        load_settings(env=env or {}, overrides=overrides)
    return {error.field: error.message for error in caught.value.errors}


def test_defaults_without_environment_or_overrides() -> None:
    settings = load_settings(env={})
    assert settings == Settings()
    assert settings.database_url == "sqlite:///orderlog.db"
    assert (settings.host, settings.port) == ("127.0.0.1", 8000)
    assert (settings.max_in_work, settings.threads) == (1000, 16)
    assert settings.processing_delay == 0.2
    assert settings.max_body_bytes == 65536
    assert settings.group_commit is True
    assert settings.sqlite_synchronous == "FULL"
    assert settings.log_level == "INFO"


def test_every_setting_has_a_flag_a_variable_and_help() -> None:
    for f in settings_fields():
        assert f.metadata["flag"].startswith("--"), f.name
        assert env_name(f) == "ORDERLOG_" + f.name.upper()
        assert f.metadata["help"], f.name


def test_environment_variables_are_read_and_converted() -> None:
    env = {
        "ORDERLOG_DATABASE_URL": "postgresql://db/orders",
        "ORDERLOG_PORT": " 9000 ",
        "ORDERLOG_MAX_IN_WORK": "8",
        "ORDERLOG_PROCESSING_DELAY": "0",
        "ORDERLOG_GROUP_COMMIT": "off",
        "ORDERLOG_NODE_ID": "node-a",
        "ORDERLOG_CLAIM_TIMEOUT": "2.5",
    }
    settings = load_settings(env=env)
    assert settings.database_url == "postgresql://db/orders"
    assert settings.port == 9000
    assert settings.max_in_work == 8
    assert settings.processing_delay == 0.0
    assert settings.group_commit is False
    assert settings.node == "node-a"
    assert settings.claim_timeout == 2.5


def test_unrelated_environment_variables_are_ignored() -> None:
    assert load_settings(env={"PORT": "1", "DATABASE_URL": "postgresql://x/y"}) == Settings()


def test_an_unknown_orderlog_variable_is_refused_naming_the_nearest_setting() -> None:
    # A typo must not start the server on defaults: this one would serve SQLite.
    found = problems(env={"ORDERLOG_DATABASE": "postgresql://db/orders"})
    assert list(found) == ["ORDERLOG_DATABASE"]
    assert "not a setting" in found["ORDERLOG_DATABASE"]
    assert "did you mean ORDERLOG_DATABASE_URL?" in found["ORDERLOG_DATABASE"]
    assert "ORDERLOG_PROCESSES" in problems(env={"ORDERLOG_PROCESS": "2"})["ORDERLOG_PROCESS"]


def test_an_unknown_variable_read_from_dotenv_says_so() -> None:
    with pytest.raises(ValidationError) as caught:
        load_settings(env={"ORDERLOG_PRT": "8021"}, dotenv={"ORDERLOG_PRT"})
    assert [error.field for error in caught.value.errors] == ["ORDERLOG_PRT (in .env)"]
    assert "ORDERLOG_PORT" in caught.value.errors[0].message


def test_a_bad_value_read_from_dotenv_says_so() -> None:
    with pytest.raises(ValidationError) as caught:
        load_settings(env={"ORDERLOG_PORT": "x"}, dotenv={"ORDERLOG_PORT"})
    assert [error.field for error in caught.value.errors] == ["ORDERLOG_PORT (in .env)"]


def test_the_test_suites_and_the_entrypoints_variables_are_not_settings_and_pass() -> None:
    env = {
        "ORDERLOG_TEST_POSTGRES_URL": "postgresql://db/test",
        "ORDERLOG_TOKEN_FILE": "/run/secrets/token",
        "ORDERLOG_TOKEN_NAME": "deploy",
        "ORDERLOG_TOKEN_SCOPES": "admin",
    }
    assert load_settings(env=env) == Settings()


def test_settings_remember_where_each_value_came_from() -> None:
    settings = load_settings(env={"ORDERLOG_CPU": "none"}, overrides={"port": "9000"})
    assert settings.source("cpu") == "ORDERLOG_CPU"
    assert settings.source("port") == "--port"
    assert settings.source("host") == "--host"  # a default: named by its flag
    assert settings == load_settings(env={}, overrides={"cpu": "none", "port": 9000})


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("port", "abc", "expected a whole number"),
        ("threads", "4.5", "expected a whole number"),
        ("processing_delay", "fast", "expected a number"),
        ("group_commit", "maybe", "expected true or false"),
    ],
)
def test_an_unparsable_value_says_what_is_expected(name: str, text: str, expected: str) -> None:
    flag = Settings.__dataclass_fields__[name].metadata["flag"]
    (message,) = problems(**{name: text}).values()
    assert message == f"cannot use {text!r}: {expected}", flag
    assert "literal" not in message and "convert" not in message


def test_process_environment_is_the_default_source(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORDERLOG_THREADS", "3")
    assert load_settings().threads == 3


@pytest.mark.parametrize(
    ("text", "value"),
    [
        *[("1", True), ("true", True), ("YES", True), ("on", True)],
        *[("0", False), ("False", False), ("no", False), ("OFF", False)],
    ],
)
def test_boolean_variables_accept_the_usual_spellings(text: str, value: bool) -> None:
    assert load_settings(env={"ORDERLOG_GROUP_COMMIT": text}).group_commit is value


def test_overrides_win_over_the_environment() -> None:
    env = {"ORDERLOG_PORT": "9000", "ORDERLOG_MAX_IN_WORK": "8", "ORDERLOG_GROUP_COMMIT": "false"}
    settings = load_settings(env=env, overrides={"port": "9100", "group_commit": True})
    assert settings.port == 9100
    assert settings.group_commit is True
    assert settings.max_in_work == 8  # not overridden: the environment still counts


def test_none_override_leaves_the_environment_value() -> None:
    settings = load_settings(env={"ORDERLOG_PORT": "9000"}, overrides={"port": None})
    assert settings.port == 9000


def test_node_defaults_to_host_name_and_port() -> None:
    settings = load_settings(env={}, overrides={"port": 8123})
    assert settings.node.endswith("-8123")
    assert len(settings.node) > len("-8123")


def test_settings_are_frozen() -> None:
    settings = load_settings(env={})
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.port = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("variable", "text"),
    [
        ("ORDERLOG_PORT", "eighty"),
        ("ORDERLOG_PORT", ""),
        ("ORDERLOG_PORT", "80.5"),
        ("ORDERLOG_MAX_IN_WORK", "4 threads"),
        ("ORDERLOG_PROCESSING_DELAY", "fast"),
        ("ORDERLOG_GROUP_COMMIT", "maybe"),
        ("ORDERLOG_PROCESSING_DELAY", "nan"),
        ("ORDERLOG_CLAIM_TIMEOUT", "inf"),
        ("ORDERLOG_SWEEP_INTERVAL", "NaN"),
    ],
)
def test_unparsable_variable_is_named_in_the_error(variable: str, text: str) -> None:
    found = problems(env={variable: text})
    assert list(found) == [variable]
    assert repr(text) in found[variable]


@pytest.mark.parametrize(
    ("name", "flag", "value"),
    [
        ("port", "--port", "eighty"),
        ("max_body_bytes", "--max-body-bytes", "64k"),
        ("group_commit", "--group-commit", "perhaps"),
        ("shutdown_timeout", "--shutdown-timeout", "-inf"),
    ],
)
def test_unparsable_flag_is_named_in_the_error(name: str, flag: str, value: str) -> None:
    found = problems(env={env_name(Settings.__dataclass_fields__[name]): "1"}, **{name: value})
    assert list(found) == [flag]


def test_every_bad_value_is_reported_at_once() -> None:
    found = problems(env={"ORDERLOG_PORT": "x", "ORDERLOG_THREADS": "y"}, max_in_work="z")
    assert set(found) == {"ORDERLOG_PORT", "ORDERLOG_THREADS", "--max-in-work"}


@pytest.mark.parametrize(
    ("variable", "flag", "name", "text"),
    [
        ("ORDERLOG_MAX_IN_WORK", "--max-in-work", "max_in_work", "0"),
        ("ORDERLOG_THREADS", "--threads", "threads", "-1"),
        ("ORDERLOG_MAX_BODY_BYTES", "--max-body-bytes", "max_body_bytes", "0"),
        ("ORDERLOG_MAX_BATCH", "--max-batch", "max_batch", "0"),
        ("ORDERLOG_CONNECTION_LIMIT", "--connection-limit", "connection_limit", "0"),
        ("ORDERLOG_CHANNEL_TIMEOUT", "--channel-timeout", "channel_timeout", "0"),
        ("ORDERLOG_PROCESSING_DELAY", "--processing-delay", "processing_delay", "-0.1"),
        ("ORDERLOG_CLAIM_TIMEOUT", "--claim-timeout", "claim_timeout", "-1"),
        ("ORDERLOG_SWEEP_INTERVAL", "--sweep-interval", "sweep_interval", "0"),
        ("ORDERLOG_PORT", "--port", "port", "65536"),
        ("ORDERLOG_PORT", "--port", "port", "-1"),
        ("ORDERLOG_SQLITE_SYNCHRONOUS", "--sqlite-synchronous", "sqlite_synchronous", "SOMETIMES"),
        # Only the two levels the help explains: OFF loses acknowledged orders in a crash.
        ("ORDERLOG_SQLITE_SYNCHRONOUS", "--sqlite-synchronous", "sqlite_synchronous", "OFF"),
        ("ORDERLOG_SQLITE_SYNCHRONOUS", "--sqlite-synchronous", "sqlite_synchronous", "EXTRA"),
        ("ORDERLOG_CPU", "--cpu", "cpu", "fast"),
        ("ORDERLOG_LOG_LEVEL", "--log-level", "log_level", "verbose"),
        ("ORDERLOG_HEADER_TIMEOUT", "--header-timeout", "header_timeout", "0"),
        ("ORDERLOG_DRAIN_TIMEOUT", "--drain-timeout", "drain_timeout", "-1"),
        (
            "ORDERLOG_MAX_CONNECTIONS_PER_CLIENT",
            "--max-connections-per-client",
            "max_connections_per_client",
            "0",
        ),
        ("ORDERLOG_TRUSTED_PROXY", "--trusted-proxy", "trusted_proxy", "nginx"),
        ("ORDERLOG_TRUSTED_PROXY", "--trusted-proxy", "trusted_proxy", "*"),
        (
            "ORDERLOG_MAX_REQUESTS_PER_CLIENT",
            "--max-requests-per-client",
            "max_requests_per_client",
            "0",
        ),
        ("ORDERLOG_PROCESSES", "--processes", "processes", "0"),
        ("ORDERLOG_PROCESSES", "--processes", "processes", "-2"),
        ("ORDERLOG_PROCESSES", "--processes", "processes", "two"),
        ("ORDERLOG_PROCESSES", "--processes", "processes", "1.5"),
        ("ORDERLOG_DEFAULT_CURRENCY", "--default-currency", "default_currency", "usd"),
        ("ORDERLOG_DEFAULT_CURRENCY", "--default-currency", "default_currency", "EURO"),
        ("ORDERLOG_DEFAULT_CURRENCY", "--default-currency", "default_currency", "12"),
        ("ORDERLOG_DEFAULT_CURRENCY", "--default-currency", "default_currency", ""),
    ],
)
def test_out_of_range_value_names_where_it_came_from(
    variable: str, flag: str, name: str, text: str
) -> None:
    assert list(problems(env={variable: text})) == [variable]
    assert list(problems(**{name: text})) == [flag]


def test_the_default_currency_is_usd_unless_set_to_an_iso_4217_code() -> None:
    assert load_settings(env={}).default_currency == "USD"
    assert load_settings(env={"ORDERLOG_DEFAULT_CURRENCY": "EUR"}).default_currency == "EUR"
    assert load_settings(env={}, overrides={"default_currency": "JPY"}).default_currency == "JPY"
    assert "ISO 4217" in problems(default_currency="eur")["--default-currency"]


def test_a_cpu_number_with_several_processes_is_refused_naming_both() -> None:
    found = problems(cpu="0", processes="2")
    assert list(found) == ["--cpu"]
    assert "--processes" in found["--cpu"]
    found = problems(env={"ORDERLOG_PROCESSES": "2", "ORDERLOG_CPU": "0"})
    assert list(found) == ["ORDERLOG_CPU"]
    assert "ORDERLOG_PROCESSES" in found["ORDERLOG_CPU"]
    load_settings(env={}, overrides={"cpu": "0", "processes": "1"})  # one process: as before


def test_auto_processes_are_one_per_two_cpus_this_process_may_run_on() -> None:
    settings = load_settings(env={}, overrides={"processes": "auto"})
    assert settings.process_count == max(1, len(os.sched_getaffinity(0)) // 2)
    assert load_settings(env={}).processes == "auto"  # the default
    assert [auto_processes(cpus) for cpus in (1, 2, 3, 4, 8, 32)] == [1, 1, 1, 2, 4, 16]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("port", "0"),  # an ephemeral port
        ("port", "65535"),
        ("processing_delay", "0"),
        ("sqlite_synchronous", "full"),
        ("sqlite_synchronous", "Normal"),
        ("log_level", "debug"),
        ("log_level", "WARNING"),
        ("trusted_proxy", "10.0.0.2"),
        ("trusted_proxy", "::1"),
        ("max_connections_per_client", "1"),
        ("drain_timeout", "0"),  # no time to serve: what was received is answered 503
        ("processes", "1"),
        ("processes", "AUTO"),
    ],
)
def test_values_at_the_edge_of_their_range_are_accepted(name: str, value: str) -> None:
    load_settings(env={}, overrides={name: value})
