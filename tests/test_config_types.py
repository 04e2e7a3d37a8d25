"""Every setting is checked for its type and its characters (issue 11, item 15), wherever it comes
from: Settings(...) in an app, the TOML file, the environment, the options. A wrong type is one
clear line naming the setting (exit 1 from a config file, as the SPEC says for a bad config file;
exit 2 for a bad option value), never "unexpected AttributeError" and never a crash later in the
app. Cookie attributes cannot smuggle a header (CR/LF), another attribute (';') or a control
character into Set-Cookie.
"""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from sessctl import Settings
from sessctl.cli import cli
from sessctl.config import ConfigError

pytestmark = pytest.mark.usefixtures("isolated")

# A hostile value of each TOML type for every key.
TOML_VALUES = {
    "int": "5",
    "big": "99999999999999999",
    "neg": "-1",
    "bool": "true",
    "float": "1.5",
    "nan": "nan",
    "str": '"x"',
    "empty": '""',
    "array": '["a", 1]',
    "table": "{ a = 1 }",
    "date": "1979-05-27",
    "datetime": "1979-05-27T07:32:00Z",
}
KEYS = [
    "db", "database_url", "table", "secret_key", "secret_key_fallbacks", "cookie_age", "cookie_name",
    "cookie_domain", "cookie_path", "cookie_secure", "cookie_httponly", "cookie_samesite",
    "expire_at_browser_close", "save_every_request",
]


def invoke(args, tmp_path=None, env=None):
    return CliRunner().invoke(cli, args, env={"SESSCTL_SECRET_KEY": "s" * 20, **(env or {})})


def one_error_line(result, code=1):
    assert result.exit_code == code, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert "unexpected" not in result.stderr and "Traceback" not in result.output, result.stderr
    return lines[0]


@pytest.mark.parametrize(
    ("line", "name"),
    [("cookie_name = 5", "cookie_name"), ("table = true", "table"), ("secret_key = 12345", "secret_key"),
     ("cookie_path = 1", "cookie_path"), ("cookie_domain = 7", "cookie_domain"), ("db = 3", "db"),
     ("cookie_samesite = 1", "cookie_samesite"), ("secret_key_file = 1", "secret_key_file"),
     ("cookie_age = 1.5", "cookie_age"), ("cookie_age = true", "cookie_age")],
)
def test_wrong_types_in_the_config_file_are_one_line(tmp_path, line, name):
    (tmp_path / "sessctl.toml").write_text(line + "\n")
    for args in (["list"], ["stats"], ["show", "k" * 32], ["decode", "e30:1:x"]):
        err = one_error_line(invoke(["--db", f"sqlite:///{tmp_path}/s.db", *args]))
        assert name.replace("db", "database") in err or name in err, err


@pytest.mark.parametrize(
    "kwargs",
    [dict(cookie_name=5), dict(table=True), dict(secret_key=12345), dict(cookie_path=None), dict(cookie_domain=7),
     dict(database_url=b"sqlite://"), dict(secret_key_fallbacks=[1, 2]), dict(cookie_samesite=1), dict(cookie_age=1.0),
     dict(secret_key=b"\xff"), dict(table="x" * 200)],
    ids=repr,
)
def test_wrong_types_in_settings_raise_config_error(kwargs):
    with pytest.raises(ConfigError):
        Settings(**kwargs)


INJECTIONS = ["evil.com\r\nSet-Cookie: admin=1", "a;b", "x\nX-Injected: 1", "a\x00b", "a\x7fb", "a\tb", "p\r"]


@pytest.mark.parametrize("value", INJECTIONS)
@pytest.mark.parametrize("name", ["cookie_domain", "cookie_path", "cookie_name"])
def test_header_injection_is_rejected(name, value):
    with pytest.raises(ConfigError, match=name):
        Settings(**{name: value})


@pytest.mark.parametrize("value", ["example.com", ".example.com", "localhost", "sub-1.example.co.uk"])
def test_ordinary_domains_pass(value):
    assert Settings(cookie_domain=value).cookie_domain == value


@pytest.mark.parametrize("value", ["/", "/app", "/a b/c", "/~user/x,y"])
def test_ordinary_paths_pass(value):
    assert Settings(cookie_path=value).cookie_path == value


def test_header_injection_from_the_config_file(tmp_path):
    (tmp_path / "sessctl.toml").write_text('cookie_domain = "evil.com\\r\\nSet-Cookie: admin=1"\n')
    one_error_line(invoke(["--db", f"sqlite:///{tmp_path}/s.db", "stats"]))
    with pytest.raises(ConfigError, match="cookie_domain"):
        Settings.load(config=tmp_path / "sessctl.toml", environ={})


@pytest.mark.parametrize("kind", list(TOML_VALUES))
@pytest.mark.parametrize("key", KEYS)
def test_every_config_key_with_every_type(tmp_path, key, kind):
    """Fuzz table: each key with a value of each TOML type. Either the value is fine (exit 0 on
    an empty SQLite table) or one clear line, exit 1; never a traceback, never 'unexpected'."""
    db = f"sqlite:///{tmp_path}/s.db"
    assert invoke(["--db", db, "init"]).exit_code == 0
    (tmp_path / "sessctl.toml").write_text(f"{key} = {TOML_VALUES[kind]}\n")
    for args in (["stats"], ["list", "--json"]):
        extra = [] if key in ("db", "database_url") else ["--db", db]
        r = invoke([*extra, *args])
        assert "Traceback" not in r.output and "unexpected" not in r.output, r.output
        if r.exit_code != 0:
            one_error_line(r)
    # An app building its Settings from the same file gets a ConfigError or working settings.
    try:
        s = Settings.load(config=tmp_path / "sessctl.toml", environ={"SESSCTL_SECRET_KEY": "s" * 20})
    except ConfigError:
        return
    from sessctl.middleware import SessionMiddleware

    try:
        SessionMiddleware(lambda e, sr: [], s)  # the constructor must not crash on what load() accepted
    except ConfigError as exc:
        assert "secret key" in str(exc)  # an explicit file's empty secret_key outranks the environment


@hsettings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.sampled_from(["cookie_domain", "cookie_path", "cookie_name", "table", "cookie_samesite"]),
       value=st.text(max_size=30))
def test_any_text_either_passes_cleanly_or_is_a_config_error(name, value):
    try:
        s = Settings(**{name: value})
    except ConfigError:
        return
    got = getattr(s, name)
    if isinstance(got, str):
        # What passed can go into a header: no control characters, no ';' in cookie attributes.
        assert got.isprintable() and not any(c in got for c in "\r\n\x00")
        if name.startswith("cookie_"):
            assert ";" not in got
        got.encode("latin-1")  # a header value is latin-1 in WSGI


def test_bad_table_option_is_usage(tmp_path):
    for table in ("bad name", "x;drop", "1abc", "a" * 100, ""):
        r = invoke(["--db", f"sqlite:///{tmp_path}/s.db", "--table", table, "list"])
        assert r.exit_code == 2, (table, r.output)
        assert "--table" in r.stderr and "Traceback" not in r.output


def test_bad_table_in_the_environment(tmp_path):
    r = invoke(["--db", f"sqlite:///{tmp_path}/s.db", "list"], env={"SESSCTL_TABLE": "x;drop"})
    assert r.exit_code in (1, 2) and "SESSCTL_TABLE" in r.stderr or "table" in r.stderr, r.output
    assert "Traceback" not in r.output
