"""Secrets: a value type that does not leak, and where to find the values.

A :class:`Secret` prints as ``********`` whatever you do with it (``str``,
``repr``, f-strings, ``%`` formatting, logging), refuses to be pickled or
JSON-encoded as its value, and compares in constant time. The value comes out
only through :meth:`Secret.reveal`, at the one place that needs it.

:func:`load_secret` looks in three places, first hit wins:

1. ``$CREDENTIALS_DIRECTORY/<name>`` -- systemd ``LoadCredential=`` /
   ``SetCredentialEncrypted=``; the file is named either like the variable in
   lower case with dashes (``MT5_PASSWORD`` -> ``mt5-password``) or exactly
   like the variable. One trailing newline is dropped.
2. the environment variable ``<name>``;
3. a ``.env`` file (``KEY=VALUE`` lines; see :func:`parse_env_file`).

Empty values count as absent. The secret's :attr:`Secret.source` says where it
came from (``credential:/run/credentials/mt5d.service/mt5-password``,
``env:MT5_PASSWORD``, ``dotenv:/srv/mt5d/.env``), for logs; never the value.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import NoReturn

__all__ = [
    "Secret",
    "SecretError",
    "SECRET_NAMES",
    "load_secret",
    "load_secrets",
    "credential_file_names",
    "nats_creds_path",
    "parse_env_file",
    "read_env_file",
]

log = logging.getLogger("mt5d.supervisor")

MASK = "********"

# The secrets mt5d reads. The NATS .creds file (JWT + NKey seed) is a file, not
# a value: see nats_creds_path().
SECRET_NAMES = ("MT5_PASSWORD", "NATS_PASSWORD", "NATS_TOKEN", "NATS_NKEY_SEED")


class SecretError(Exception):
    """A secret source that exists but cannot be used (unreadable, malformed).

    Messages name the source and the line, never a value.
    """


class Secret:
    """A string that does not show itself."""

    __slots__ = ("_value", "_source")

    def __init__(self, value: str, source: str = "") -> None:
        if not isinstance(value, str):
            raise TypeError(f"Secret holds a str, not {type(value).__name__}")
        object.__setattr__(self, "_value", value)
        object.__setattr__(self, "_source", source)

    def reveal(self) -> str:
        """The value. Call it where the value is used, and nowhere else."""
        return self._value

    @property
    def source(self) -> str:
        """Where the value came from (safe to log)."""
        return self._source

    def __repr__(self) -> str:
        return f"Secret('{MASK}')"

    def __str__(self) -> str:
        return MASK

    def __format__(self, spec: str) -> str:
        return format(MASK, spec)

    def __eq__(self, other: object) -> bool:
        # Only another Secret compares: Secret("x") == "x" is False, so a
        # secret is never matched against a plain string by accident.
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash((Secret, hashlib.sha256(self._value.encode()).digest()))

    def __bool__(self) -> bool:
        return bool(self._value)

    def __setattr__(self, name: str, value: object) -> NoReturn:
        raise AttributeError("Secret is immutable")

    def __delattr__(self, name: str) -> NoReturn:
        raise AttributeError("Secret is immutable")

    # Pickling would write the value in clear (and copy would go through
    # __reduce_ex__): refuse the first, make the second trivial (immutable).
    def __reduce_ex__(self, protocol: object) -> NoReturn:
        raise TypeError("a Secret cannot be pickled (reveal() it explicitly if you really must)")

    def __reduce__(self) -> NoReturn:
        raise TypeError("a Secret cannot be pickled (reveal() it explicitly if you really must)")

    def __copy__(self) -> Secret:
        return self

    def __deepcopy__(self, memo: dict) -> Secret:
        return self


# ---- .env files --------------------------------------------------------------------
_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\", "$": "$"}


def parse_env_file(text: str, *, origin: str = ".env") -> dict[str, str]:
    """Parse ``KEY=VALUE`` lines.

    - blank lines and lines starting with ``#`` are skipped; ``export KEY=...`` is accepted;
    - unquoted values are stripped and end at `` #`` (a ``#`` after whitespace starts a comment);
    - ``'single quotes'`` are literal; ``"double quotes"`` understand ``\\n \\t \\r \\" \\\\ \\$``;
      after the closing quote only whitespace and a ``# comment`` may follow;
    - no variable expansion, no multi-line values; a later duplicate wins.

    A malformed line raises :class:`SecretError` naming ``origin`` and the line
    number (never the line, which may hold a secret).
    """
    out: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export ") or line.startswith("export\t"):
            line = line[len("export"):].lstrip()
        key, sep, rest = line.partition("=")
        key = key.strip()
        if not sep or not _KEY.fullmatch(key):
            raise SecretError(f"{origin}:{number}: expected KEY=VALUE")
        rest = rest.lstrip()
        if rest[:1] in ("'", '"'):
            value, tail = _quoted(rest, origin, number)
            tail = tail.strip()
            if tail and not tail.startswith("#"):
                raise SecretError(f"{origin}:{number}: unexpected text after the closing quote")
        else:
            value = re.split(r"\s#", rest, maxsplit=1)[0].strip()
        out[key] = value
    return out


def _quoted(rest: str, origin: str, number: int) -> tuple[str, str]:
    quote = rest[0]
    if quote == "'":
        end = rest.find("'", 1)
        if end < 0:
            raise SecretError(f"{origin}:{number}: unterminated quote")
        return rest[1:end], rest[end + 1:]
    chars: list[str] = []
    i = 1
    while i < len(rest):
        c = rest[i]
        if c == "\\" and i + 1 < len(rest):
            nxt = rest[i + 1]
            chars.append(_ESCAPES.get(nxt, "\\" + nxt))
            i += 2
            continue
        if c == '"':
            return "".join(chars), rest[i + 1:]
        chars.append(c)
        i += 1
    raise SecretError(f"{origin}:{number}: unterminated quote")


def read_env_file(path: str | os.PathLike[str]) -> dict[str, str]:
    """Read and parse a ``.env`` file; warns when others may read it."""
    p = Path(path)
    try:
        st = p.stat()
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise SecretError(f"{p}: not UTF-8 text") from None
    except OSError as err:
        raise SecretError(f"{p}: cannot read ({err.strerror})") from None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("secrets file is readable by other users (chmod 600 it)",
                    extra={"path": str(p), "mode": oct(stat.S_IMODE(st.st_mode))})
    return parse_env_file(text, origin=str(p))


# ---- lookup ----------------------------------------------------------------------------
def credential_file_names(name: str) -> tuple[str, ...]:
    """Candidate file names in $CREDENTIALS_DIRECTORY: ``mt5-password``, then ``MT5_PASSWORD``."""
    dashed = name.lower().replace("_", "-")
    return (dashed,) if dashed == name else (dashed, name)


def _credentials_dir(env: Mapping[str, str], credentials_dir: str | os.PathLike[str] | None) -> Path | None:
    if credentials_dir is not None:
        return Path(credentials_dir)
    value = env.get("CREDENTIALS_DIRECTORY")
    return Path(value) if value else None


def _read_credential(path: Path) -> str | None:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as err:
        raise SecretError(f"{path}: cannot read ({err.strerror})") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise SecretError(f"{path}: not UTF-8 text") from None
    # `echo secret > file` adds a newline that is not part of the secret.
    if text.endswith("\r\n"):
        text = text[:-2]
    elif text.endswith("\n"):
        text = text[:-1]
    return text


def load_secret(
    name: str,
    *,
    env: Mapping[str, str] = os.environ,
    env_file: str | os.PathLike[str] | None = None,
    credentials_dir: str | os.PathLike[str] | None = None,
) -> Secret | None:
    """Find ``name`` (``MT5_PASSWORD``...) in credentials, environment, then ``env_file``.

    ``credentials_dir`` defaults to ``$CREDENTIALS_DIRECTORY`` from ``env``;
    ``env_file`` is read only when given (a missing file is no error: it is
    an optional convenience). Returns None when no source has a non-empty value.
    """
    directory = _credentials_dir(env, credentials_dir)
    if directory is not None:
        for candidate in credential_file_names(name):
            path = directory / candidate
            value = _read_credential(path)
            if value:
                return Secret(value, f"credential:{path}")
    value = env.get(name)
    if value:
        return Secret(value, f"env:{name}")
    if env_file is not None and Path(env_file).exists():
        value = read_env_file(env_file).get(name)
        if value:
            return Secret(value, f"dotenv:{env_file}")
    return None


def load_secrets(
    names: tuple[str, ...] = SECRET_NAMES,
    *,
    env: Mapping[str, str] = os.environ,
    env_file: str | os.PathLike[str] | None = None,
    credentials_dir: str | os.PathLike[str] | None = None,
) -> dict[str, Secret]:
    """Every secret of ``names`` that is set, by name (the .env file is read once)."""
    dotenv: dict[str, str] = {}
    if env_file is not None and Path(env_file).exists():
        dotenv = read_env_file(env_file)
    found: dict[str, Secret] = {}
    for name in names:
        secret = load_secret(name, env=env, credentials_dir=credentials_dir)
        if secret is None and dotenv.get(name):
            secret = Secret(dotenv[name], f"dotenv:{env_file}")
        if secret is not None:
            found[name] = secret
    return found


def nats_creds_path(
    configured: str = "",
    *,
    env: Mapping[str, str] = os.environ,
    credentials_dir: str | os.PathLike[str] | None = None,
) -> tuple[Path, str] | None:
    """The NATS ``.creds`` file to hand to nats-py (``user_credentials=``), and its source.

    Looked for as ``$CREDENTIALS_DIRECTORY/nats.creds`` (or ``nats-creds``,
    ``NATS_CREDS``), then the path in ``$NATS_CREDS``, then ``configured``
    (``[nats] creds_file``). A path that is named but missing raises
    :class:`SecretError`; nothing named returns None.
    """
    directory = _credentials_dir(env, credentials_dir)
    if directory is not None:
        for candidate in ("nats.creds", "nats-creds", "NATS_CREDS"):
            path = directory / candidate
            if path.is_file():
                return path, f"credential:{path}"
    for value, source in ((env.get("NATS_CREDS", ""), "env:NATS_CREDS"), (configured, "config:nats.creds_file")):
        if value:
            path = Path(value).expanduser()
            if not path.is_file():
                raise SecretError(f"{source}: {path}: no such file")
            return path, source
    return None
