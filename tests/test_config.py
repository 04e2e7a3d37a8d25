"""Settings and their sources: argument > environment > TOML file > default."""

from __future__ import annotations

import pytest

from sessctl import Settings
from sessctl.config import ConfigError


def test_defaults_are_the_seeds():
    s = Settings()
    assert (s.database_url, s.table, s.cookie_age, s.cookie_name) == (
        "sqlite:///sessions.db",
        "django_session",
        1209600,
        "sessionid",
    )
    assert s.cookie_httponly and not s.cookie_secure and s.cookie_samesite == "Lax"
    assert s.cookie_path == "/" and s.cookie_domain is None
    assert not s.expire_at_browser_close and not s.save_every_request


def test_immutable_and_secret_never_in_repr():
    s = Settings(secret_key="hunter2-very-secret", secret_key_fallbacks=("old-secret",))
    assert "hunter2" not in repr(s) and "old-secret" not in repr(s)
    with pytest.raises(AttributeError):
        s.table = "x"  # type: ignore[misc]


def test_precedence_argument_env_file_default(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sessctl.toml").write_text('db = "sqlite:///from-file.db"\ntable = "file_t"\ncookie_age = 60\n')
    s = Settings.load(environ={})
    assert s.database_url == f"sqlite:///{tmp_path / 'from-file.db'}"  # anchored to the file's folder
    assert (s.table, s.cookie_age) == ("file_t", 60)
    s = Settings.load(environ={"SESSCTL_TABLE": "env_t"})
    assert s.table == "env_t"
    s = Settings.load(environ={"SESSCTL_TABLE": "env_t"}, table="arg_t")
    assert s.table == "arg_t"


def test_secret_key_file_holds_key_and_fallbacks(tmp_path):
    key_file = tmp_path / "secret"
    key_file.write_text("#starts-with-hash\nold-one\n\nolder\n")
    s = Settings.load(environ={}, secret_key_file=key_file)
    assert s.secret_key == "#starts-with-hash"
    assert s.secret_key_fallbacks == ("old-one", "older")


def test_secret_from_env_with_fallbacks():
    s = Settings.load(environ={"SESSCTL_SECRET_KEY": "k", "SESSCTL_SECRET_KEY_FALLBACKS": "a, b,"})
    assert s.secret_key == "k" and s.secret_key_fallbacks == ("a", "b")


def test_config_path_from_env(tmp_path):
    cfg = tmp_path / "elsewhere.toml"
    cfg.write_text('[sessctl]\ntable = "t2"\nsecret_key_file = "key"\n')
    (tmp_path / "key").write_text("the-key\n")
    s = Settings.load(environ={"SESSCTL_CONFIG": str(cfg)})
    assert s.table == "t2" and s.secret_key == "the-key"


@pytest.mark.parametrize(
    "content,message",
    [
        ("db = ", "not valid TOML"),
        ("tabel = 'x'", "unknown key"),
        ("cookie_age = -1", "cookie_age"),
        ("cookie_samesite = 'sometimes'", "cookie_samesite"),
        ("table = 'drop table; --'", "identifier"),
        ("cookie_secure = 'yes'", "cookie_secure"),
        ("secret_key_file = 'missing'", "does not exist"),
    ],
)
def test_bad_config_files_are_one_clear_error(tmp_path, content, message):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(content)
    with pytest.raises(ConfigError, match=message):
        Settings.load(cfg, environ={})


def test_missing_explicit_config_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        Settings.load(tmp_path / "nope.toml", environ={})


def test_samesite_normalised():
    assert Settings(cookie_samesite="strict").cookie_samesite == "Strict"
    assert Settings(cookie_samesite=None).cookie_samesite is None
