"""Settings from the environment: per-service prefix, system-wide fallback, clear errors."""

import pytest

from shared.config import ConfigError, Setting, load_config

EXTRA = (
    Setting("DEADLINE_HOUR", int, 12, "order deadline hour", minimum=0),
    Setting("SMTP_PASSWORD", str, None, "relay password", secret=True),
    Setting("STARTTLS", bool, True, "use STARTTLS"),
    Setting("MODE", str, "a", "mode", choices=("a", "b")),
)


def test_defaults_are_safe_and_database_is_a_file_under_var():
    config = load_config("orders", EXTRA, env={})
    assert config["BROKER_URL"] == "memory://"
    assert config["DATABASE_URL"].startswith("sqlite:///") and config["DATABASE_URL"].endswith("var/orders.db")
    assert config["DEADLINE_HOUR"] == 12 and config["STARTTLS"] is True


def test_service_prefix_wins_over_system_wide_value():
    env = {"RECEPT_BROKER_URL": "amqp://a/", "RECEPT_ORDERS_BROKER_URL": "amqp://b/", "RECEPT_CRM_PREFETCH": "7"}
    config = load_config("orders", env=env)
    assert config["BROKER_URL"] == "amqp://b/"
    assert config["PREFETCH"] == 200  # another service's setting does not leak in


def test_values_are_typed():
    env = {"RECEPT_ORDERS_DEADLINE_HOUR": "10", "RECEPT_ORDERS_STARTTLS": "off", "RECEPT_RELAY_INTERVAL": "0.5"}
    config = load_config("orders", EXTRA, env=env)
    assert (config["DEADLINE_HOUR"], config["STARTTLS"], config["RELAY_INTERVAL"]) == (10, False, 0.5)


@pytest.mark.parametrize(
    "key,value,expected",
    [
        ("RECEPT_ORDERS_DEADLINE_HOUR", "noon", "expected an integer"),
        ("RECEPT_ORDERS_DEADLINE_HOUR", "-1", "at least 0"),
        ("RECEPT_ORDERS_STARTTLS", "maybe", "expected one of"),
        ("RECEPT_ORDERS_MODE", "c", "must be one of a, b"),
    ],
)
def test_bad_value_names_the_variable_and_the_rule(key, value, expected):
    with pytest.raises(ConfigError) as info:
        load_config("orders", EXTRA, env={key: value})
    assert key in str(info.value) and expected in str(info.value)


def test_secret_values_are_never_echoed():
    with pytest.raises(ConfigError) as info:
        load_config("orders", (Setting("PIN", int, 0, secret=True),), env={"RECEPT_ORDERS_PIN": "hunter2"})
    assert "hunter2" not in str(info.value)


def test_overrides_win_and_describe_lists_every_variable():
    config = load_config("orders", EXTRA, env={"RECEPT_ORDERS_DEADLINE_HOUR": "9"}, overrides={"DEADLINE_HOUR": 8})
    assert config["DEADLINE_HOUR"] == 8
    names = [name for name, _help in config.describe()]
    assert "RECEPT_ORDERS_DATABASE_URL" in names and "RECEPT_ORDERS_SMTP_PASSWORD" in names
