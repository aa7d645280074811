"""mt5d.daemon.logs: one JSON object per line; secrets never written."""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import re
from datetime import datetime, timezone

import msgspec
import numpy as np
import pytest

from mt5d.daemon.logs import AREAS, JsonFormatter, Redactor, register_secret, setup_logging
from mt5d.daemon.secrets import Secret
from mt5d.errors import MT5AuthError

PASSWORD = 'p@ss"wörd\\42'  # quote, backslash and non-ASCII: JSON and repr escape them differently


@pytest.fixture(autouse=True)
def restore_logging():
    """Leave the logging tree as found (levels, root handlers) for the other tests."""
    root = logging.getLogger()
    names = ["mt5d", *(f"mt5d.{a}" for a in AREAS)]
    saved = (root.level, list(root.handlers), {n: logging.getLogger(n).level for n in names})
    yield
    level, handlers, levels = saved
    for h in [h for h in root.handlers if h not in handlers]:
        root.removeHandler(h)
    root.setLevel(level)
    for n, lvl in levels.items():
        logging.getLogger(n).setLevel(lvl)


@pytest.fixture
def capture():
    """setup_logging into a StringIO; yields (stream, redactor, lines())."""
    stream = io.StringIO()
    redactor = setup_logging("DEBUG", stream=stream)

    def lines() -> list[dict]:
        text = stream.getvalue()
        assert text.endswith("\n") or text == ""
        return [msgspec.json.decode(line) for line in text.splitlines()]

    yield stream, redactor, lines


def test_base_keys_and_extra(capture):
    _, _, lines = capture
    log = logging.getLogger("mt5d.connection")
    log.warning("terminal call failed", extra={"error": "MT5ConnectionError", "code": -10004})
    [line] = lines()
    assert line["level"] == "WARNING"
    assert line["logger"] == "mt5d.connection"
    assert line["event"] == "terminal call failed"
    assert line["error"] == "MT5ConnectionError" and line["code"] == -10004
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line["ts"])
    ts = datetime.strptime(line["ts"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)
    assert abs(ts.timestamp() - datetime.now(timezone.utc).timestamp()) < 60
    assert set(line) == {"ts", "level", "logger", "event", "error", "code"}


def test_timestamp_format_exact():
    f = JsonFormatter()
    record = logging.LogRecord("mt5d.poller", logging.INFO, __file__, 1, "tick", (), None)
    record.created = 1700000000.0429
    assert msgspec.json.decode(f.format(record))["ts"] == "2023-11-14T22:13:20.042Z"


def test_one_object_per_line_even_with_newlines(capture):
    stream, _, lines = capture
    logging.getLogger("mt5d.rpc").info("two\nlines", extra={"detail": "a\nb"})
    assert stream.getvalue().count("\n") == 1
    assert lines()[0]["event"] == "two\nlines"


def test_colliding_field_names_get_an_underscore(capture):
    _, _, lines = capture
    logging.getLogger("mt5d.health").warning("queue full", extra={"event": "auth_failed"})
    logging.getLogger("mt5d.health").info("x", extra={"level": "custom", "ts": 1, "logger": "l"})
    a, b = lines()
    assert a["event"] == "queue full" and a["event_"] == "auth_failed"
    assert (b["level"], b["level_"], b["ts_"], b["logger_"]) == ("INFO", "custom", 1, "l")


def test_exception_is_type_and_message_only(capture):
    stream, _, lines = capture
    try:
        raise MT5AuthError("invalid account", -6)
    except MT5AuthError:
        logging.getLogger("mt5d.connection").exception("login failed")
    [line] = lines()
    assert line["exc_type"] == "MT5AuthError"
    assert line["exc_msg"] == "invalid account"
    assert line["level"] == "ERROR"
    assert "Traceback" not in stream.getvalue()


def test_exc_info_true_outside_except_is_harmless(capture):
    _, _, lines = capture
    logging.getLogger("mt5d.rpc").error("no exception here", exc_info=True)
    assert "exc_type" not in lines()[0]


def test_values_msgspec_cannot_encode_become_text(capture):
    _, _, lines = capture

    @dataclasses.dataclass
    class Creds:
        login: int
        password: object

    class Weird:
        def __str__(self):
            return "weird!"

    logging.getLogger("mt5d.supervisor").info("values", extra=dict(
        secret=Secret("s3cr3t-value"), creds=Creds(1, Secret("s3cr3t-value")),
        n=np.float64(1.5), i=np.int32(7), weird=Weird(), err=ValueError("bad"),
        keys={(1, 2): "tuple key"}))
    [line] = lines()
    assert line["secret"] == "********"
    assert line["creds"] == {"login": 1, "password": "********"}
    assert line["n"] == 1.5 and line["i"] == 7
    assert line["weird"] == "weird!"
    assert line["err"] == "ValueError: bad"
    assert line["keys"] == {"(1, 2)": "tuple key"}  # odd keys written as text


def test_bad_format_args_do_not_lose_the_line():
    record = logging.LogRecord("mt5d.rpc", logging.INFO, __file__, 1, "%d items", ("not a number",), None)
    line = msgspec.json.decode(JsonFormatter().format(record))
    assert line["event"] == "%d items ('not a number',)"


def test_unencodable_field_falls_back_to_repr():
    class BadStr:
        def __str__(self):
            raise RuntimeError("no")

        def __repr__(self):
            return "<BadStr>"

    record = logging.LogRecord("mt5d.rpc", logging.INFO, __file__, 1, "x", (), None)
    record.bad = BadStr()
    record.good = 1
    line = msgspec.json.decode(JsonFormatter().format(record))
    assert line["bad"] == "<BadStr>" and line["good"] == 1


# ---- redaction -------------------------------------------------------------------------
def test_registered_password_never_appears(capture):
    stream, redactor, lines = capture
    assert redactor.register_secret(Secret(PASSWORD))
    log = logging.getLogger("mt5d.connection")
    log.info(f"login with {PASSWORD}")  # in the message
    log.info("login", extra={"password": PASSWORD, "nested": {"k": [PASSWORD]}})  # in fields
    log.info("repr", extra={"cfg": repr({"password": PASSWORD})})  # repr-escaped inside a str
    try:
        raise RuntimeError(f"broker said: bad password {PASSWORD!r} for 123")
    except RuntimeError:
        log.exception("failed")  # in an exception message
    log.error("auth", extra={"detail": f"pw={PASSWORD}", "error": MT5AuthError(f"bad {PASSWORD}")})
    log.info("key", extra={PASSWORD: 1})  # even as a key
    log.info("payload", extra={"body": json.dumps({"password": PASSWORD})})  # JSON (ASCII-escaped) in a str
    text = stream.getvalue()
    for form in (PASSWORD, msgspec.json.encode(PASSWORD).decode()[1:-1], repr(PASSWORD)[1:-1], "wörd", "w\\u00f6rd"):
        assert form not in text
    parsed = lines()  # still valid JSON after redaction
    assert parsed[0]["event"] == "login with ********"
    assert parsed[1]["password"] == "********" and parsed[1]["nested"] == {"k": ["********"]}
    assert parsed[3]["exc_msg"].startswith("broker said: bad password ")
    assert parsed[3]["exc_msg"].endswith(" for 123")
    assert parsed[4]["detail"] == "pw=********"
    assert "********" in parsed[5]
    assert json.loads(parsed[6]["body"]) == {"password": "********"}
    assert "ss" not in stream.getvalue().replace("pass", "")  # no fragment of p@ss... anywhere


def test_longer_secret_masked_whole():
    r = Redactor()
    r.register_secret("abcd")
    r.register_secret("abcdefgh")
    assert r.redact("x abcdefgh y abcd") == "x ******** y ********"


def test_short_values_are_not_registered():
    r = Redactor()
    assert r.register_secret("ab") is False
    assert r.redact("ab ab") == "ab ab"
    assert len(r) == 0
    with pytest.raises(TypeError):
        r.register_secret(1234)  # type: ignore[arg-type]


def test_nothing_registered_is_identity():
    assert Redactor().redact('{"a":"b"}') == '{"a":"b"}'


def test_redaction_applies_to_third_party_loggers(capture):
    stream, redactor, lines = capture
    redactor.register_secret("nats-pass-123")
    logging.getLogger("nats.aio.client").error("auth nats-pass-123 refused")
    assert "nats-pass-123" not in stream.getvalue()
    assert lines()[0]["logger"] == "nats.aio.client"


# ---- setup ---------------------------------------------------------------------------------
def test_levels_per_area(capture):
    stream = io.StringIO()
    setup_logging("WARNING", {"poller": "DEBUG", "mt5d.rpc": "ERROR"}, stream=stream)
    logging.getLogger("mt5d.poller").debug("shown")
    logging.getLogger("mt5d.rpc").warning("hidden")
    logging.getLogger("mt5d.health").info("hidden")
    logging.getLogger("mt5d.health").warning("shown too")
    events = [msgspec.json.decode(x)["event"] for x in stream.getvalue().splitlines()]
    assert events == ["shown", "shown too"]


def test_setup_twice_does_not_stack_handlers(capture):
    first, _, _ = capture
    second = io.StringIO()
    setup_logging("INFO", stream=second)
    logging.getLogger("mt5d.nats").info("once")
    assert first.getvalue() == ""
    assert second.getvalue().count("\n") == 1
    assert sum(getattr(h, "_mt5d_handler", False) for h in logging.getLogger().handlers) == 1


def test_setup_defaults_to_current_stderr(capsys):
    setup_logging("INFO")
    logging.getLogger("mt5d.terminal").info("to stderr")
    err = capsys.readouterr().err
    assert msgspec.json.decode(err.splitlines()[-1])["event"] == "to stderr"


def test_unknown_level_and_area_refused():
    before = list(logging.getLogger().handlers)
    with pytest.raises(ValueError):
        setup_logging("LOUD", stream=io.StringIO())
    with pytest.raises(ValueError):
        setup_logging("INFO", {"poller": "CHATTY"}, stream=io.StringIO())
    assert logging.getLogger().handlers == before  # nothing half-installed


def test_module_register_secret_uses_the_installed_handler(capture):
    stream, redactor, lines = capture
    assert register_secret("module-level-secret")
    assert register_secret(Secret("another-secret"))
    logging.getLogger("mt5d.supervisor").info("x module-level-secret another-secret")
    assert lines()[0]["event"] == "x ******** ********"
    assert len(redactor) > 0


def test_module_register_secret_before_setup_refuses():
    root = logging.getLogger()
    assert not any(getattr(h, "_mt5d_handler", False) for h in root.handlers)
    with pytest.raises(RuntimeError, match="setup_logging"):
        register_secret("too-early-secret")
