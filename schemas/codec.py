"""Payload encodings: JSON (default, readable with ``nats sub``) or MessagePack.

One Encoder per Codec and one Decoder per type, made once and reused: msgspec
is fastest that way. Subscribers know the encoding from their config;
``decode_any`` sniffs it instead (a struct in JSON starts with ``{``, in
MessagePack with a map marker), which also covers error bodies (always JSON).
"""

from __future__ import annotations

from typing import Any, Literal, TypeVar

import msgspec

__all__ = ["Codec", "ENCODINGS", "Encoding", "decode_any", "decode_any_json_line", "sniff"]

T = TypeVar("T")
Encoding = Literal["json", "msgpack"]
ENCODINGS: tuple[str, ...] = ("json", "msgpack")

_JSON_START = frozenset(b'{["\t\n\r ')


class Codec:
    """``encode(obj) -> bytes`` and ``decode(data, type)`` in one encoding."""

    def __init__(self, encoding: Encoding = "json") -> None:
        if encoding not in ENCODINGS:
            raise ValueError(f"unknown encoding {encoding!r}; expected one of {', '.join(ENCODINGS)}")
        self.encoding = encoding
        self._module = msgspec.json if encoding == "json" else msgspec.msgpack
        encoder = self._module.Encoder()
        # Bound methods as attributes: the publisher calls encode once per tick.
        self.encode = encoder.encode
        self._decoders: dict[Any, Any] = {}

    def __repr__(self) -> str:
        return f"Codec({self.encoding!r})"

    def decode(self, data: bytes, type: type[T]) -> T:
        """Decode and validate; raises ``msgspec.DecodeError`` (or its ``ValidationError``)."""
        return self.decoder(type).decode(data)

    def decoder(self, type: type[T]):
        """The reusable msgspec Decoder for ``type`` (for a subscriber's hot loop)."""
        dec = self._decoders.get(type)
        if dec is None:
            dec = self._decoders[type] = self._module.Decoder(type)
        return dec


_CODECS = {name: Codec(name) for name in ENCODINGS}  # type: ignore[arg-type]


def sniff(data: bytes) -> Encoding:
    """Which encoding ``data`` is in, from its first byte (empty counts as JSON)."""
    return "json" if not data or data[0] in _JSON_START else "msgpack"


def decode_any(data: bytes, type: type[T]) -> T:
    """Decode ``data`` in whichever encoding it is in."""
    return _CODECS[sniff(data)].decode(data, type)


def decode_any_json_line(data: bytes) -> str:
    """Any payload as one line of JSON, for humans (``mt5d tail``); never raises."""
    try:
        if sniff(data) == "json":
            return msgspec.json.encode(msgspec.json.decode(data)).decode()
        return msgspec.json.encode(msgspec.msgpack.decode(data)).decode()
    except (msgspec.DecodeError, msgspec.EncodeError, TypeError, ValueError):
        return repr(bytes(data))
