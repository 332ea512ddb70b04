"""Configuration: embedded defaults, a TOML file, environment overrides, refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from retouch.server.config import (
    DEV_API_KEY,
    DEV_TENANT,
    ConfigError,
    ServerConfig,
    hash_key,
    load_config,
)


def test_defaults_need_nothing_installed() -> None:
    config = load_config(environ={})
    assert config.listen == "127.0.0.1:50051"
    assert config.environment == "local"
    assert config.tenants == (DEV_TENANT,)
    assert DEV_TENANT.key_sha256 == hash_key(DEV_API_KEY)
    assert config.database_url == "sqlite:///" + str(Path(".retouch/retouch.db").resolve())
    assert config.object_store_url.startswith("file://")


def test_a_file_and_the_environment_combine(tmp_path: Path) -> None:
    path = tmp_path / "retouch.toml"
    path.write_text(
        """
environment = "staging"
tls_terminated_upstream = true
listen = "0.0.0.0:6000"
max_pixels = 1000000

[[tenants]]
name = "checkout"
key_sha256 = "{}"

[providers.opencv]
inpaint_radius = 5
""".format(hash_key("checkout-key"))
    )
    config = load_config(
        path, environ={"RETOUCH_LISTEN": "127.0.0.1:7000", "RETOUCH_MAX_PIXELS": "42"}
    )
    assert config.environment == "staging"
    assert config.listen == "127.0.0.1:7000"
    assert config.max_pixels == 42
    assert [t.name for t in config.tenants] == ["checkout"]
    assert config.providers["opencv"]["inpaint_radius"] == 5


def test_the_config_file_can_come_from_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('listen = "127.0.0.1:1234"\n')
    assert load_config(environ={"RETOUCH_CONFIG": str(path)}).listen == "127.0.0.1:1234"


@pytest.mark.parametrize(
    ("text", "environ", "message"),
    [
        ('environment = "prod"', {}, "environment"),
        ('environment = "production"', {}, "development key"),
        ("colour = 1", {}, "unknown config settings: colour"),
        ("max_pixels = 0", {}, "max_pixels"),
        ("", {"RETOUCH_MAX_PIXELS": "lots"}, "RETOUCH_MAX_PIXELS"),
        ('[[tenants]]\nname = "x"\nkey_sha256 = "abc"', {}, "64 hex digits"),
        ("listen = ", {}, "not valid TOML"),
    ],
)
def test_bad_settings_are_named(
    tmp_path: Path, text: str, environ: dict[str, str], message: str
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(path, environ=environ)


def test_production_accepts_real_keys() -> None:
    config = ServerConfig(
        environment="production",
        tls_terminated_upstream=True,
        tenants=(DEV_TENANT.__class__(name="svc", key_sha256=hash_key("real")),),
    )
    assert config.environment == "production"
