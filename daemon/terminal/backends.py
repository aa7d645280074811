"""Terminal backends: build the object with the MetaTrader5 function set.

All three look the same to the connection actor: ``native`` is the real
package, ``rpyc`` a bridge to a real terminal on Windows/Wine (mt5linux-style
classic server), ``sim`` the simulated terminal that ships with mt5d.
"""

from __future__ import annotations

import collections
import inspect
import ipaddress
import logging
import pickle
import socket
import struct
import time
from dataclasses import replace
from typing import Any, Callable

from mt5d.errors import MT5InitError

__all__ = ["sim_terminal", "native_module", "RpycTerminal"]

_LENGTH = struct.Struct(">I")  # a frame's length, before it (see _mt5d_frames)
_RPYC_HEADER = struct.Struct("!LB")  # rpyc's own frame: length, compressed, the data, then b"\n"
_MARK = b"mt5d-frames\x00"  # (as _MT5D_MARK in the bridge)
_MARK_FRAME = _RPYC_HEADER.pack(len(_MARK), 0) + _MARK + b"\n"

log = logging.getLogger("mt5d.terminal")


def sim_terminal(*, seed: int, ticks_per_second: float, synthetic_symbols: int = 0,
                 faults: tuple[tuple[str, float, float], ...] = (), login: int = 10001234,
                 password: str | None = None, server: str = "MT5Sim-Demo", broker_tz: str = "EET",
                 clock: Callable[[], float] = time.time, book_depth: dict[str, int] | None = None,
                 **options: Any) -> Any:
    """The simulated terminal; ``faults`` are (kind, at, duration) rows."""
    from mt5d.daemon.terminal.sim import Fault, SimTerminal, default_symbols
    from mt5d.daemon.terminal.sim import synthetic_symbols as synthetic

    symbols = list(default_symbols()) + list(synthetic(synthetic_symbols))
    if book_depth:  # levels per side, per symbol, over the catalogue's own
        symbols = [replace(s, book_depth=book_depth[s.name]) if s.name in book_depth else s for s in symbols]
    return SimTerminal(
        seed=seed, clock=clock, symbols=symbols,
        ticks_per_second=ticks_per_second, faults=[Fault(*f) for f in faults],
        login=login, password=password, server=server, broker_tz=broker_tz, **options,
    )


def native_module() -> Any:
    """The MetaTrader5 package itself (Windows, or a Python under Wine)."""
    try:
        import MetaTrader5  # type: ignore[import-not-found]
    except ImportError:
        raise MT5InitError(
            "the MetaTrader5 package is not installed (it runs on Windows or under Wine)", -10003
        ) from None
    return MetaTrader5


# Runs inside the bridge: take the call's arguments pickled, call, convert the
# result to plain data, and send it back with last_error() as one pickled blob,
# so a call is one round trip and nothing is walked element by element through
# remote references. A poll cycle (mt5d.daemon.terminal.hop, loaded at connect)
# is one round trip too.
_BRIDGE_CODE = '''
import pickle as _p
_MT5D_MARK = b"mt5d-frames\\x00"  # no rpyc message starts with "m"
import MetaTrader5 as _mt5
def _mt5d_one(name, args, kwargs=()):
    res = getattr(_mt5, name)(*args, **dict(kwargs))
    if hasattr(res, "_asdict"):
        d = res._asdict()
        res = ("__nt__", type(res).__name__, tuple(d), tuple(d.values()))
    elif type(res) is tuple and res and hasattr(res[0], "_asdict"):  # a book, positions_get & co: rows
        d = res[0]._asdict()
        res = ("__nts__", type(res[0]).__name__, tuple(d), tuple(tuple(r) for r in res))
    return res, tuple(_mt5.last_error())
def _mt5d_call(blob):
    # Arguments by value: a dict sent as an rpyc reference is no dict to the terminal.
    return _p.dumps(_mt5d_one(*_p.loads(blob)), protocol=4)
def _mt5d_load(sources):
    import sys, types
    mod = types.ModuleType("_mt5d_hop")
    sys.modules[mod.__name__] = mod  # dataclasses look their module up
    for source in sources:
        exec(source, mod.__dict__)
    globals()["_mt5d_hop"] = mod
class _MT5dPickler(_p.Pickler):
    # An array as its bytes and dtype: loads whatever numpy the daemon has.
    def reducer_override(self, obj):
        if isinstance(obj, _mt5d_hop._np.ndarray):
            return _mt5d_hop._np.frombuffer, (obj.tobytes(), obj.dtype)
        return NotImplemented
def _mt5d_cycle(blob):
    import io
    out = io.BytesIO()
    _MT5dPickler(out, protocol=4).dump(_mt5d_hop.run(_mt5, _p.loads(blob)))
    return out.getvalue()
def _mt5d_frames(conn):
    # This connection's socket, from here on, in frames of our own: a 4-byte length, then a
    # kind byte (c: call, y: cycle) and its blob; the answer a length, then an ok byte
    # (1, or 0 and the error's text) and the blob. Its serving thread stays in this loop.
    import struct, socket as _s
    sock = conn._channel.stream.sock
    sock.settimeout(None)
    sock.setsockopt(_s.IPPROTO_TCP, _s.TCP_NODELAY, 1)
    def exact(n):
        buf = bytearray()
        while len(buf) < n:
            got = sock.recv(n - len(buf))
            if not got:
                raise EOFError
            buf += got
        return bytes(buf)
    try:
        # rpyc frames the client sent before this call's (netref releases) may still come:
        # skip them up to its marker, then mark the start of ours the same way.
        while exact(struct.unpack("!LB", exact(5))[0] + 1)[:-1] != _MT5D_MARK:  # (+ rpyc's "\\n")
            pass
        sock.sendall(struct.pack("!LB", len(_MT5D_MARK), 0) + _MT5D_MARK + b"\\n")
        while True:
            size, = struct.unpack(">I", exact(4))
            frame = exact(size)
            try:
                answer = b"\\x01" + (_mt5d_call if frame[:1] == b"c" else _mt5d_cycle)(frame[1:])
            except Exception as err:
                answer = b"\\x00" + repr(err).encode()
            sock.sendall(struct.pack(">I", len(answer)) + answer)
    except (OSError, EOFError):
        sock.close()
'''


def _hop_sources() -> tuple[str, ...]:
    """The poll cycle's terminal-side code, sent to the bridge once per connection."""
    from mt5d.actors.logic import cursor
    from mt5d.daemon.terminal import hop

    return inspect.getsource(cursor), inspect.getsource(hop)


class RpycTerminal:
    """The MetaTrader5 function set over an rpyc classic bridge.

    rpyc sets the bridge up (its code, the hop's source); then the connection's
    socket carries frames of its own (``_mt5d_frames``): rpyc's request
    machinery cost the daemon more CPU per poll cycle than reading its answer.
    """

    def __init__(self, host: str, port: int, *, request_timeout: float) -> None:
        self._host, self._port, self._timeout = host, port, request_timeout
        self._rpyc = None  # the rpyc objects of the connection (see _connect)
        self._sock: socket.socket | None = None
        self._last_error: tuple[int, str] = (1, "Success")
        self._types: dict[tuple, type] = {}
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = host == "localhost"
        if not loopback:
            log.warning(
                "rpyc bridge is not on loopback: rpyc classic runs any code sent to it; "
                "keep the port private (firewall, SSH tunnel or container network)",
                extra={"host": host, "port": port},
            )

    def _connect(self) -> None:
        import rpyc

        conn = rpyc.classic.connect(self._host, self._port)
        # rpyc's own timeout must be above ours, so ours fires first.
        conn._config["sync_request_timeout"] = self._timeout
        try:
            conn.execute(_BRIDGE_CODE)
            conn.namespace["_mt5d_load"](_hop_sources())
            # No answer ever comes: the bridge's side of this connection now serves our frames.
            frames, remote = conn.namespace["_mt5d_frames"], conn.root.getconn()
            pending = rpyc.async_(frames)(remote)
            # rpyc must never write on it again: held here (a released netref sends a message),
            # and closed (rpyc's close would send one, and wait for its answer).
            self._rpyc = (conn, frames, remote, pending)
            conn._closed = True
            sock = conn._channel.stream.sock
            sock.settimeout(self._timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            # Both ways, rpyc's last frames (answers to earlier releases) end at a marker.
            sock.sendall(_MARK_FRAME)
            while self._rpyc_frame(sock) != _MARK:
                pass
        except BaseException:
            conn._closed = True  # (a close would wait on a bridge that may be the problem)
            conn._channel.close()
            self._rpyc = None
            raise
        self._sock = sock

    def _round_trip(self, kind: bytes, blob: bytes) -> tuple[Any, tuple[int, str] | None]:
        """One frame into the bridge and its answer: (unpickled answer, None), or (None,
        the ``last_error()`` pair the terminal itself gives for a lost IPC link)."""
        try:
            if self._sock is None:
                self._connect()
            self._sock.sendall(_LENGTH.pack(len(blob) + 1) + kind + blob)
            size, = _LENGTH.unpack(self._exact(4))
            answer = self._exact(size)
        except TimeoutError:  # (before OSError: it is one)
            self._drop()
            return None, (-10005, "IPC timeout (bridge)")
        except (OSError, EOFError) as err:
            self._drop()
            return None, (-10004, f"No IPC connection (bridge: {type(err).__name__})")
        if answer[:1] != b"\x01":
            raise RuntimeError(f"rpyc bridge: {answer[1:].decode(errors='replace')}")
        return pickle.loads(answer[1:]), None

    def _rpyc_frame(self, sock: socket.socket) -> bytes:
        size, _ = _RPYC_HEADER.unpack(self._exact(_RPYC_HEADER.size, sock))
        return self._exact(size + 1, sock)[:-1]  # (rpyc ends each frame with b"\n")

    def _exact(self, n: int, sock: socket.socket | None = None) -> bytes:
        sock = sock or self._sock
        buf = bytearray()
        while len(buf) < n:
            got = sock.recv(n - len(buf))
            if not got:
                raise EOFError
            buf += got
        return bytes(buf)

    def _invoke(self, name: str, args: tuple, kwargs: dict) -> Any:
        answer, lost = self._round_trip(b"c", pickle.dumps((name, args, tuple(kwargs.items())), protocol=4))
        if lost is not None:
            self._last_error = lost
            return None
        result, self._last_error = answer
        return self._local(result)

    def mt5d_cycle(self, plan) -> Any:
        """One poll cycle (``hop.run``) inside the bridge: one round trip.

        None on a bridge failure, with ``last_error()`` set, like a terminal call.
        """
        answer, lost = self._round_trip(b"y", pickle.dumps(plan, protocol=4))
        self._last_error = lost or (1, "Success")
        return answer

    def _local(self, result: Any) -> Any:
        if isinstance(result, tuple) and len(result) == 4 and result[0] in ("__nt__", "__nts__"):
            kind, typename, fields, values = result
            cls = self._types.get((typename, fields))
            if cls is None:
                cls = self._types[(typename, fields)] = collections.namedtuple(typename, fields)
            result = cls(*values) if kind == "__nt__" else tuple(cls(*v) for v in values)
        return result

    def _drop(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()  # first: the netrefs' releases below then fail, unsent
        self._rpyc = None

    def last_error(self) -> tuple[int, str]:
        return self._last_error

    def __getattr__(self, name: str) -> Callable[..., Any]:
        if name.startswith("_"):
            raise AttributeError(name)
        return lambda *args, **kwargs: self._invoke(name, args, kwargs)
