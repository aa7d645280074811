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
import time
from dataclasses import replace
from typing import Any, Callable

from mt5d.errors import MT5InitError

__all__ = ["sim_terminal", "native_module", "RpycTerminal"]

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
'''


def _hop_sources() -> tuple[str, ...]:
    """The poll cycle's terminal-side code, sent to the bridge once per connection."""
    from mt5d.actors.logic import cursor
    from mt5d.daemon.terminal import hop

    return inspect.getsource(cursor), inspect.getsource(hop)


class RpycTerminal:
    """The MetaTrader5 function set over an rpyc classic bridge."""

    def __init__(self, host: str, port: int, *, request_timeout: float) -> None:
        self._host, self._port, self._timeout = host, port, request_timeout
        self._conn = None
        self._call = None
        self._cycle = None
        self._last_error: tuple[int, str] = (1, "Success")
        self._types: dict[tuple, type] = {}
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = host == "localhost"
        self._loopback = loopback
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
        if self._loopback:
            # rpyc zlib-compresses every frame over 3 kB, both ways: a poll cycle's ticks, a
            # history page. On loopback that is CPU on both sides for no bytes saved.
            conn._channel.compress = False
            conn.root.getconn()._channel.compress = False
        conn.execute(_BRIDGE_CODE)
        conn.namespace["_mt5d_load"](_hop_sources())
        self._conn, self._call = conn, conn.namespace["_mt5d_call"]
        self._cycle = conn.namespace["_mt5d_cycle"]

    def _round_trip(self, which: str, *args: Any) -> tuple[Any, tuple[int, str] | None]:
        """One call into the bridge: (unpickled answer, None), or (None, the
        ``last_error()`` pair the terminal itself gives for a lost IPC link)."""
        try:
            if self._call is None:
                self._connect()
            blob = (self._call if which == "call" else self._cycle)(*args)
        except (OSError, EOFError) as err:
            self._drop()
            return None, (-10004, f"No IPC connection (bridge: {type(err).__name__})")
        except TimeoutError:
            self._drop()
            return None, (-10005, "IPC timeout (bridge)")
        return pickle.loads(bytes(blob)), None

    def _invoke(self, name: str, args: tuple, kwargs: dict) -> Any:
        answer, lost = self._round_trip("call", pickle.dumps((name, args, tuple(kwargs.items())), protocol=4))
        if lost is not None:
            self._last_error = lost
            return None
        result, self._last_error = answer
        return self._local(result)

    def mt5d_cycle(self, plan) -> Any:
        """One poll cycle (``hop.run``) inside the bridge: one round trip.

        None on a bridge failure, with ``last_error()`` set, like a terminal call.
        """
        answer, lost = self._round_trip("cycle", pickle.dumps(plan, protocol=4))
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
        conn, self._conn, self._call, self._cycle = self._conn, None, None, None
        if conn is not None:
            try:
                conn.close()
            except Exception:
                pass

    def last_error(self) -> tuple[int, str]:
        return self._last_error

    def __getattr__(self, name: str) -> Callable[..., Any]:
        if name.startswith("_"):
            raise AttributeError(name)
        return lambda *args, **kwargs: self._invoke(name, args, kwargs)
