"""Counter-based hashing (splitmix64), scalar and vectorized over numpy uint64.

Everything random in the sim is ``mix(key + counter * GOLDEN)`` for some key
and counter, so any second, minute or tick can be produced on its own, in any
order, by any instance: the market is a pure function of (seed, symbol, time).
"""

from __future__ import annotations

import numpy as np

MASK = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15
_M1 = 0xBF58476D1CE4E5B9
_M2 = 0x94D049BB133111EB

_U_GOLDEN = np.uint64(GOLDEN)
_U_M1 = np.uint64(_M1)
_U_M2 = np.uint64(_M2)
_S30, _S27, _S31 = np.uint64(30), np.uint64(27), np.uint64(31)
_S11 = np.uint64(11)
_INV53 = 1.0 / (1 << 53)
_INV16 = 1.0 / 65536.0
_F16 = np.uint64(0xFFFF)


def mix(z: int) -> int:
    """splitmix64 finalizer on a Python int (wraps to 64 bits)."""
    z &= MASK
    z = ((z ^ (z >> 30)) * _M1) & MASK
    z = ((z ^ (z >> 27)) * _M2) & MASK
    return z ^ (z >> 31)


def fnv1a(text: str) -> int:
    """Stable 64-bit FNV-1a of a string (Python's hash() is salted per process)."""
    h = 0xCBF29CE484222325
    for b in text.encode("utf-8"):
        h = ((h ^ b) * 0x100000001B3) & MASK
    return h


def derive(key: int, stream: int) -> int:
    """A sub-key for one independent stream of a key."""
    return mix(key ^ mix(stream * GOLDEN + 0x632BE59BD9B4E019))


def vmix(z: np.ndarray) -> np.ndarray:
    """splitmix64 finalizer over a uint64 array (in place on a fresh array)."""
    z = z ^ (z >> _S30)
    z *= _U_M1
    z ^= z >> _S27
    z *= _U_M2
    z ^= z >> _S31
    return z


def stream(key: int, counters: np.ndarray) -> np.ndarray:
    """``mix(key + counter * GOLDEN)`` for an int64/uint64 array of counters."""
    c = counters.astype(np.uint64, copy=True)
    c *= _U_GOLDEN
    c += np.uint64(key & MASK)
    return vmix(c)


def unit53(h: np.ndarray) -> np.ndarray:
    """Uniform floats in [0, 1) from the top 53 bits."""
    return (h >> _S11).astype(np.float64) * _INV53


def field16(h: np.ndarray, shift: int) -> np.ndarray:
    """Uniform floats in [0, 1) from 16 bits at ``shift``."""
    return ((h >> np.uint64(shift)) & _F16).astype(np.float64) * _INV16


def unit_scalar(h: int) -> float:
    return (h >> 11) * _INV53
