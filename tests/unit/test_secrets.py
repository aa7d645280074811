"""mt5d.daemon.secrets: the Secret type never shows its value; the lookup order."""

from __future__ import annotations

import copy
import json
import logging
import os
import pickle

import msgspec
import pytest

from mt5d.daemon.secrets import (
    SECRET_NAMES,
    Secret,
    SecretError,
    credential_file_names,
    load_secret,
    load_secrets,
    nats_creds_path,
    parse_env_file,
)

VALUE = "hunter2-Sup3r$ecret"


# ---- the type -------------------------------------------------------------------------
def test_secret_never_shows_its_value(caplog):
    s = Secret(VALUE)
    assert repr(s) == "Secret('********')"
    assert str(s) == "********"
    assert f"{s}" == "********"
    assert f"{s!r}" == "Secret('********')"
    assert f"{s:>10}" == "  ********"
    assert "%s %r" % (s, s) == "******** Secret('********')"
    assert "{}".format(s) == "********"
    assert VALUE not in repr([s, {"k": s}, (s,)])
    with caplog.at_level(logging.INFO):
        logging.getLogger("mt5d.test").info("password is %s (%r)", s, s)
    assert VALUE not in caplog.text
    assert s.reveal() == VALUE


def test_secret_equality_and_hash():
    assert Secret(VALUE) == Secret(VALUE)
    assert Secret(VALUE) != Secret(VALUE + "x")
    assert Secret(VALUE) != VALUE  # never equal to a plain str
    assert VALUE != Secret(VALUE)
    assert hash(Secret(VALUE)) == hash(Secret(VALUE, source="env:X"))  # the source is not part of it
    assert len({Secret("a"), Secret("a"), Secret("b")}) == 2


def test_secret_is_not_a_str():
    s = Secret(VALUE)
    assert not isinstance(s, str)
    with pytest.raises(TypeError):
        "prefix-" + s  # type: ignore[operator]
    with pytest.raises(TypeError):
        Secret(b"bytes")  # type: ignore[arg-type]


def test_secret_is_immutable():
    s = Secret(VALUE)
    with pytest.raises(AttributeError):
        s._value = "other"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        del s._value
    assert copy.copy(s) is s
    assert copy.deepcopy({"p": s})["p"] is s


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_secret_refuses_pickle(protocol):
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(Secret(VALUE), protocol=protocol)
    with pytest.raises(TypeError):
        pickle.dumps({"nested": [Secret(VALUE)]}, protocol=protocol)


def test_secret_json_encoding_refuses_or_masks():
    with pytest.raises(TypeError):
        msgspec.json.encode({"password": Secret(VALUE)})
    with pytest.raises(TypeError):
        msgspec.msgpack.encode(Secret(VALUE))
    with pytest.raises(TypeError):
        json.dumps({"password": Secret(VALUE)})
    # A generic fallback hook (str) gives the mask, not the value.
    out = msgspec.json.encode({"password": Secret(VALUE)}, enc_hook=str)
    assert out == b'{"password":"********"}'
    assert VALUE.encode() not in json.dumps({"p": Secret(VALUE)}, default=str).encode()


def test_truthiness():
    assert Secret("x")
    assert not Secret("")


# ---- .env parsing ----------------------------------------------------------------------
ENV_CASES = [
    ("plain", "A=1", {"A": "1"}),
    ("spaces around", "  A =  hello world  ", {"A": "hello world"}),
    ("comment line and blank", "# c\n\nA=1\n   # indented comment", {"A": "1"}),
    ("inline comment", "A=abc # note", {"A": "abc"}),
    ("hash inside value", "A=abc#def", {"A": "abc#def"}),
    ("export", "export A=1\nexport\tB=2", {"A": "1", "B": "2"}),
    ("double quotes", 'A="a b # not a comment"', {"A": "a b # not a comment"}),
    ("double quote escapes", r'A="x\"y\\z\n\t\$w\q"', {"A": 'x"y\\z\n\t$w\\q'}),
    ("double quotes with comment", 'A="v"  # c', {"A": "v"}),
    ("single quotes literal", r"A='x\ny $HOME \"'", {"A": r'x\ny $HOME \"'}),
    ("empty", "A=\nB=''\nC=\"\"", {"A": "", "B": "", "C": ""}),
    ("equals in value", "A=b=c==", {"A": "b=c=="}),
    ("no expansion", "A=$B ${C}", {"A": "$B ${C}"}),
    ("later wins", "A=1\nA=2", {"A": "2"}),
    ("crlf", "A=1\r\nB=2\r\n", {"A": "1", "B": "2"}),
]


@pytest.mark.parametrize("text, expected", [c[1:] for c in ENV_CASES], ids=[c[0] for c in ENV_CASES])
def test_parse_env_file(text, expected):
    assert parse_env_file(text) == expected


BAD_ENV = [
    ("no equals", "JUSTAKEY"),
    ("bad key", "1A=x"),
    ("bad key chars", "A-B=x"),
    ("unterminated double", 'A="abc'),
    ("unterminated single", "A='abc"),
    ("junk after quote", 'A="abc" def'),
]


@pytest.mark.parametrize("text", [c[1] for c in BAD_ENV], ids=[c[0] for c in BAD_ENV])
def test_parse_env_file_errors_name_the_line_not_the_value(text):
    with pytest.raises(SecretError) as info:
        parse_env_file("OK=1\n" + text, origin="/x/.env")
    msg = str(info.value)
    assert msg.startswith("/x/.env:2: ")
    assert "abc" not in msg and "JUSTAKEY" not in msg


# ---- lookup order ------------------------------------------------------------------------
@pytest.fixture
def sources(tmp_path):
    creds = tmp_path / "credentials"
    creds.mkdir()
    dotenv = tmp_path / ".env"
    return creds, dotenv


def test_credential_file_names():
    assert credential_file_names("MT5_PASSWORD") == ("mt5-password", "MT5_PASSWORD")
    assert credential_file_names("mt5-password") == ("mt5-password",)


LOOKUP = [
    # (name, files in credentials dir, env, .env text, expected value, expected source prefix)
    ("credential dashed wins", {"mt5-password": "from-cred\n"}, {"MT5_PASSWORD": "from-env"},
     "MT5_PASSWORD=from-dotenv", "from-cred", "credential:"),
    ("credential exact name", {"MT5_PASSWORD": "exact"}, {"MT5_PASSWORD": "from-env"}, "", "exact", "credential:"),
    ("dashed before exact", {"mt5-password": "v-dash", "MT5_PASSWORD": "v-exact"}, {}, "", "v-dash", "credential:"),
    ("credential keeps inner whitespace", {"mt5-password": " a b \n"}, {}, "", " a b ", "credential:"),
    ("credential crlf", {"mt5-password": "win\r\n"}, {}, "", "win", "credential:"),
    ("only one newline dropped", {"mt5-password": "x\n\n"}, {}, "", "x\n", "credential:"),
    ("env next", {}, {"MT5_PASSWORD": "from-env"}, "MT5_PASSWORD=from-dotenv", "from-env", "env:MT5_PASSWORD"),
    ("empty credential falls through", {"mt5-password": "\n"}, {"MT5_PASSWORD": "from-env"}, "", "from-env", "env:"),
    ("dotenv last", {}, {}, "MT5_PASSWORD='from dotenv'", "from dotenv", "dotenv:"),
    ("empty env falls through", {}, {"MT5_PASSWORD": ""}, "MT5_PASSWORD=dotval", "dotval", "dotenv:"),
    ("nowhere", {}, {}, "OTHER=1", None, None),
]


@pytest.mark.parametrize(
    "files, env, dotenv_text, want, want_source",
    [c[1:] for c in LOOKUP],
    ids=[c[0] for c in LOOKUP],
)
def test_lookup_order(sources, files, env, dotenv_text, want, want_source):
    creds, dotenv = sources
    for fname, content in files.items():
        (creds / fname).write_text(content, newline="")
    dotenv.write_text(dotenv_text)
    secret = load_secret("MT5_PASSWORD", env=env, env_file=dotenv, credentials_dir=creds)
    if want is None:
        assert secret is None
        return
    assert isinstance(secret, Secret)
    assert secret.reveal() == want
    assert secret.source.startswith(want_source)
    assert want not in secret.source


def test_credentials_directory_from_env(sources):
    creds, _ = sources
    (creds / "nats-token").write_text("tok\n")
    secret = load_secret("NATS_TOKEN", env={"CREDENTIALS_DIRECTORY": str(creds)})
    assert secret is not None and secret.reveal() == "tok"
    assert secret.source == f"credential:{creds / 'nats-token'}"


def test_missing_env_file_and_dir_are_not_errors(tmp_path):
    assert load_secret("MT5_PASSWORD", env={}, env_file=tmp_path / "nope.env",
                       credentials_dir=tmp_path / "no-dir") is None


def test_malformed_env_file_raises(sources):
    _, dotenv = sources
    dotenv.write_text('MT5_PASSWORD="unterminated\n')
    with pytest.raises(SecretError, match=r"\.env:1: unterminated quote"):
        load_secret("MT5_PASSWORD", env={}, env_file=dotenv)


def test_undecodable_credential_raises(sources):
    creds, _ = sources
    (creds / "mt5-password").write_bytes(b"\xff\xfe")
    with pytest.raises(SecretError, match="not UTF-8"):
        load_secret("MT5_PASSWORD", env={}, credentials_dir=creds)


def test_world_readable_env_file_warns(sources, caplog):
    _, dotenv = sources
    dotenv.write_text("MT5_PASSWORD=x1")
    os.chmod(dotenv, 0o644)
    with caplog.at_level(logging.WARNING, logger="mt5d.supervisor"):
        load_secret("MT5_PASSWORD", env={}, env_file=dotenv)
    assert any("readable by other users" in r.getMessage() for r in caplog.records)
    assert "x1" not in caplog.text
    caplog.clear()
    os.chmod(dotenv, 0o600)
    with caplog.at_level(logging.WARNING, logger="mt5d.supervisor"):
        load_secret("MT5_PASSWORD", env={}, env_file=dotenv)
    assert not caplog.records


def test_load_secrets_all_names(sources):
    creds, dotenv = sources
    (creds / "mt5-password").write_text("p1")
    dotenv.write_text("NATS_TOKEN=t1\nNATS_NKEY_SEED=SUAXXX\n")
    found = load_secrets(env={"NATS_PASSWORD": "np"}, env_file=dotenv, credentials_dir=creds)
    assert set(found) == set(SECRET_NAMES)
    assert {k: v.reveal() for k, v in found.items()} == {
        "MT5_PASSWORD": "p1", "NATS_PASSWORD": "np", "NATS_TOKEN": "t1", "NATS_NKEY_SEED": "SUAXXX"}
    assert found["MT5_PASSWORD"].source.startswith("credential:")
    assert found["NATS_PASSWORD"].source == "env:NATS_PASSWORD"
    assert found["NATS_TOKEN"].source == f"dotenv:{dotenv}"


# ---- the NATS .creds file ----------------------------------------------------------------
def test_nats_creds_path_order(tmp_path):
    creds = tmp_path / "cd"
    creds.mkdir()
    from_env = tmp_path / "env.creds"
    from_env.write_text("x")
    configured = tmp_path / "conf.creds"
    configured.write_text("x")
    assert nats_creds_path("", env={}) is None
    assert nats_creds_path(str(configured), env={}) == (configured, "config:nats.creds_file")
    assert nats_creds_path(str(configured), env={"NATS_CREDS": str(from_env)}) == (from_env, "env:NATS_CREDS")
    (creds / "nats.creds").write_text("x")
    env = {"NATS_CREDS": str(from_env), "CREDENTIALS_DIRECTORY": str(creds)}
    assert nats_creds_path(str(configured), env=env) == (creds / "nats.creds", f"credential:{creds / 'nats.creds'}")


def test_nats_creds_path_missing_file_is_an_error(tmp_path):
    with pytest.raises(SecretError, match="no such file"):
        nats_creds_path(str(tmp_path / "missing.creds"), env={})
