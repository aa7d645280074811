"""The simulated market: ticks and bars as a pure function of (seed, symbol, time).

Model (all in broker time, prices in integer points):

* Minute bars are closed-form. The price at each minute boundary is
  ``exp(log p0 + coarse + fine)``: ``coarse`` is multi-octave value noise on
  whole hours (periods 1 h .. ~1 year, amplitudes scaling like a random walk),
  linear within the hour; ``fine`` is a Brownian bridge inside each hour
  built from one hashed increment per minute. A minute's open is the price at
  its start, its close the price at its end (+-1 point), its high/low add
  hashed excursions, its tick count is Poisson around
  ``ticks_per_second * 60 * rate * session activity``.
* The ticks of a minute are generated on demand *from* that bar: the first
  tick is the open, the last the close, two interior ticks sit on the high and
  the low, the rest follow a bridged random walk clipped to [low, high]. So the
  aggregate of a minute's ticks is exactly its M1 bar, with no need to
  enumerate ticks to build history; every higher timeframe is aggregated from
  M1 (via H1 per day), so H1 == aggregate of its M1s, D1 == its H1s, etc.
* Tick times: per minute, ~22-38 % of ticks share the millisecond of the
  previous tick; the others get hashed, sorted millisecond offsets.
* Spread: the first tick of each minute has the typical spread, later ones
  add 0..3 steps, so the bar spread (minimum) is the typical spread.

Whatever depends on the instance (ticks exist only up to "now", stall
windows) is applied on top: the minute that holds "now" and minutes cut by a
stall window are aggregated bottom-up from their remaining ticks.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Sequence

import numpy as np

from mt5d.daemon.terminal import mt5_constants as C
from mt5d.daemon.terminal.sim._hash import GOLDEN, derive, fnv1a, mix, stream, unit53, unit_scalar
from mt5d.daemon.terminal.sim.clock import BrokerClock
from mt5d.daemon.terminal.sim.symbols import SimSymbol

__all__ = ["Market", "HISTORY_START", "MAX_TICKS_PER_REQUEST"]

# History begins here (broker time): no ticks or bars before it.
HISTORY_START = 1577836800  # 2020-01-01 00:00
HISTORY_START_MIN = HISTORY_START // 60
HISTORY_START_DAY = HISTORY_START // 86400
MAX_TICKS_PER_REQUEST = 5_000_000
WARM_AHEAD_MS = 30_000  # the next minute is made ahead over the last 30 s of each (see Market._warm_ahead)

DAY_MIN = 1440
DAY_MS = 86_400_000
NOCT = 14
O, H, L, CL, N, SP, RV = range(7)
_IMAX = np.iinfo(np.int64).max
_IMIN = np.iinfo(np.int64).min

# Session activity by broker hour (UTC+2/+3): Asia quiet, London busy, overlap busiest.
_ACT = np.array([0.55, 0.5, 0.5, 0.6, 0.65, 0.7, 0.75, 0.8, 0.9, 1.1, 1.25, 1.25,
                 1.2, 1.15, 1.2, 1.45, 1.5, 1.45, 1.3, 1.1, 0.95, 0.85, 0.7, 0.6])
_ACT = _ACT / _ACT.mean()

EMPTY_TICKS = np.empty(0, dtype=C.TICK_DTYPE)
EMPTY_RATES = np.empty(0, dtype=C.RATE_DTYPE)
_EMPTY_PTS = np.empty(0, dtype=np.int64)
_EMPTY_RAW = np.empty(0, dtype=np.uint8)
_TSZ = C.TICK_DTYPE.itemsize
_FLAGS_FX = C.TICK_FLAG_BID | C.TICK_FLAG_ASK
_FLAGS_TRADE = C.TICK_FLAG_BID | C.TICK_FLAG_ASK | C.TICK_FLAG_LAST | C.TICK_FLAG_VOLUME


class SymbolModel:
    """The per-symbol parameters and hash keys."""

    def __init__(self, sym: SimSymbol, seed: int, tps: float, index: int) -> None:
        self.sym = sym
        self.name = sym.name
        self.index = index
        key = mix(((int(seed) * GOLDEN) ^ fnv1a(sym.feed or sym.name)))
        self.k_oct = [derive(key, 100 + k) for k in range(NOCT)]
        self.k_m1, self.k_m2 = derive(key, 1), derive(key, 2)
        self.k_ta, self.k_tb, self.k_anchor = (derive(key, i) for i in (5, 6, 7))
        self.digits = sym.digits
        self.scale10 = float(10 ** sym.digits)
        self.logp0 = math.log(sym.price)
        self.sig_m = sym.volatility / math.sqrt(DAY_MIN)
        sig_h = sym.volatility / math.sqrt(24.0)
        self.amp = [0.7 * sig_h * math.sqrt(2.0**k) for k in range(NOCT)]
        self.lam = max(0.0, float(tps)) * 60.0 * sym.rate
        self.act = 1.0 + sym.activity * (_ACT - 1.0)
        self.spread = int(sym.spread)
        self.sp_step = max(1, self.spread // 10)
        self.p_share = 0.22 + 0.16 * unit_scalar(derive(key, 8))
        self.trades = bool(sym.trades)
        self.vunit = int(sym.volume_unit)
        self.flags = _FLAGS_TRADE if sym.trades else _FLAGS_FX

    # -- closed-form minute bars -------------------------------------------
    def coarse(self, hours: np.ndarray) -> np.ndarray:
        acc = np.zeros(len(hours), dtype=np.float64)
        for k in range(NOCT):
            g = hours >> k
            f = (hours & ((1 << k) - 1)).astype(np.float64) * (1.0 / (1 << k))
            v0 = unit53(stream(self.k_oct[k], g)) * 2.0 - 1.0
            v1 = unit53(stream(self.k_oct[k], g + 1)) * 2.0 - 1.0
            acc += self.amp[k] * (v0 + (v1 - v0) * f)
        return acc

    def raw_days(self, d0: int, nd: int, clock: BrokerClock) -> np.ndarray:
        """Closed-form M1 bars of broker days d0..d0+nd-1: int64 (7, nd*1440)."""
        nh = nd * 24
        hours = np.arange(d0 * 24, d0 * 24 + nh + 1, dtype=np.int64)
        coarse = self.coarse(hours)
        m = np.arange(d0 * DAY_MIN, (d0 + nd) * DAY_MIN, dtype=np.int64)
        # Two hashes per minute, read as 16-bit uniforms (f) and bytes (b):
        # f1[0:3] price step, b1[6] high excursion, b1[7] low excursion;
        # f2[0:2] tick count, b2[4] rate variation, b2[5] volume, b2[6] close jitter / side.
        h1 = stream(self.k_m1, m)
        h2 = stream(self.k_m2, m)
        f1 = _fields(h1)
        f2 = _fields(h2)
        b1 = h1.view(np.uint8).reshape(-1, 8)
        b2 = h2.view(np.uint8).reshape(-1, 8)
        z = (f1[:, 0] + f1[:, 1] + f1[:, 2] - 1.5) * 2.0
        w = np.zeros((nh, 61))
        np.cumsum(z.reshape(nh, 60), axis=1, out=w[:, 1:])
        frac = np.arange(61, dtype=np.float64) / 60.0
        fine = w - frac * w[:, 60:61]
        loga = (self.logp0 + coarse[:-1, None] + (coarse[1:] - coarse[:-1])[:, None] * frac
                + self.sig_m * fine)
        a = np.exp(loga) * self.scale10
        a_open = a[:, :60].ravel()
        a_close = a[:, 1:].ravel()
        out = np.empty((7, nd * DAY_MIN), dtype=np.int64)
        o = np.rint(a_open).astype(np.int64)
        c = np.rint(a_close).astype(np.int64) + _JITTER[b2[:, 6] & 3]
        # tick counts
        lam = self.lam * self.act[(m // 60) % 24] * _RATE_VAR[b2[:, 4]]
        n = _poisson(lam, f2)
        n[m < HISTORY_START_MIN] = 0
        if clock.fixed is None:
            for year in {_year_of_day(d0), _year_of_day(d0 + nd - 1)}:
                gap = clock.spring_gap(year)
                if gap is not None:
                    a0 = gap[0] // 60 - d0 * DAY_MIN
                    a1 = gap[1] // 60 - d0 * DAY_MIN
                    if a1 > 0 and a0 < len(n):
                        n[max(a0, 0):max(0, min(a1, len(n)))] = 0
        c = np.where(n == 1, o, c)
        sc = np.maximum(1.0, a_open * self.sig_m * 0.6)
        xh = (sc * _EXPO[b1[:, 6]]).astype(np.int64)
        xl = (sc * _EXPO[b1[:, 7]]).astype(np.int64)
        side = (b2[:, 6] & 4).astype(bool)
        three = n == 3
        xh[three & ~side] = 0
        xl[three & side] = 0
        few = n <= 2
        xh[few] = 0
        xl[few] = 0
        out[O] = o
        out[H] = np.maximum(o, c) + xh
        out[L] = np.maximum(1, np.minimum(o, c) - xl)
        out[CL] = c
        out[N] = n
        out[SP] = self.spread
        if self.trades:
            out[RV] = self.vunit * (n + (n * b2[:, 5]) // 64)
        else:
            out[RV] = 0
        return out

    # -- ticks of one minute ------------------------------------------------
    def minute_ticks(self, m: int, o: int, hi: int, lo: int, c: int, n: int,
                     rv: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """All ticks of broker minute ``m`` (aggregating exactly to the given bar)."""
        if n <= 0:
            return EMPTY_TICKS, _EMPTY_PTS, _EMPTY_PTS
        idx = np.arange(n, dtype=np.int64)
        mk = (m * GOLDEN) & ((1 << 64) - 1)
        fa = _fields(stream(mix(self.k_ta ^ mk), idx))
        share = fa[:, 0] < self.p_share
        share[0] = False
        new = ~share
        k = int(np.count_nonzero(new))
        hb = stream(mix(self.k_tb ^ mk), idx[:k])
        ev = np.sort((unit53(hb) * 60000.0).astype(np.int64))
        ms = ev[np.cumsum(new) - 1]
        # anchors: open at 0, close at n-1, high and low inside
        xs = [0]
        ys = [o]
        inner = n - 2
        if inner >= 2:
            hs = mix(self.k_anchor ^ mk)
            ih = 1 + hs % inner
            il = 1 + (ih - 1 + 1 + (hs >> 24) % (inner - 1)) % inner
            pts = sorted(((ih, hi), (il, lo)))
            xs += [p[0] for p in pts]
            ys += [p[1] for p in pts]
        elif inner == 1:
            xs.append(1)
            ys.append(hi if hi > max(o, c) else (lo if lo < min(o, c) else o))
        if n >= 2:
            xs.append(n - 1)
            ys.append(c)
        xa = np.array(xs, dtype=np.int64)
        ya = np.array(ys, dtype=np.float64)
        if n > 2:
            base = np.interp(idx, xa, ya)
            step = max(0.6, o * self.sig_m / math.sqrt(n) * 1.7)
            walk = np.cumsum((fa[:, 1] * 2.0 - 1.0) * step)
            walk -= np.interp(idx, xa, walk[xa])
            px = np.clip(np.rint(base + walk), lo, hi).astype(np.int64)
            px[xa] = ya.astype(np.int64)
        else:
            px = ya.astype(np.int64)
        u = fa[:, 2]
        extra = ((u > 0.5).astype(np.int64) + (u > 0.8) + (u > 0.95)) * self.sp_step
        extra[0] = 0
        spr = self.spread + extra
        arr = np.empty(n, dtype=C.TICK_DTYPE)
        tm = m * 60000 + ms
        arr["time"] = tm // 1000
        arr["time_msc"] = tm
        arr["bid"] = px / self.scale10
        arr["ask"] = (px + spr) / self.scale10
        if self.trades:
            e = rv // self.vunit - n
            ex = ((idx + 1) * e) // n - (idx * e) // n
            vol = self.vunit * (1 + ex)
            arr["last"] = (px + spr // 2) / self.scale10
            arr["volume"] = vol
            arr["volume_real"] = vol
        else:
            arr["last"] = 0.0
            arr["volume"] = 0
            arr["volume_real"] = 0.0
        arr["flags"] = self.flags
        return arr, px, spr


def _year_of_day(day: int) -> int:
    return int(np.datetime64(int(day), "D").astype("datetime64[Y]").astype(int)) + 1970


# byte -> close jitter (-1, 0, 0, +1), rate factor (0.8 .. 1.2), exponential(1) quantile
_JITTER = np.array([-1, 0, 0, 1], dtype=np.int64)
_RATE_VAR = 0.8 + 0.4 * (np.arange(256) + 0.5) / 256.0
_SQRT6 = math.sqrt(6.0)
_EXPO = -np.log1p(-(np.arange(256) + 0.5) / 256.0)


def _fields(h: np.ndarray) -> np.ndarray:
    """(n, 4) uniforms in [0, 1) from the four 16-bit fields of each hash."""
    return h.view(np.uint16).reshape(-1, 4) * (1.0 / 65536.0)


def _poisson(lam: np.ndarray, f: np.ndarray) -> np.ndarray:
    """Deterministic Poisson-ish counts from hash fields ``f`` (n, 4).

    Normal approximation (triangular from two fields) for large means, inverse CDF
    (from the first two fields as one 32-bit uniform) below.
    """
    n = np.zeros(len(lam), dtype=np.int64)
    big = lam >= 30.0
    if big.all():
        z = (f[:, 0] + f[:, 1] - 1.0) * _SQRT6
        return np.maximum(0.0, np.rint(lam + np.sqrt(lam) * z)).astype(np.int64)
    if big.any():
        lb = lam[big]
        fb = f[big]
        z = (fb[:, 0] + fb[:, 1] - 1.0) * _SQRT6
        n[big] = np.maximum(0.0, np.rint(lb + np.sqrt(lb) * z)).astype(np.int64)
    small = (~big) & (lam > 0.0)
    if small.any():
        ls = lam[small]
        us = f[small, 0] + f[small, 1] * (1.0 / 65536.0)
        p = np.exp(-ls)
        cdf = p.copy()
        k = np.zeros(len(ls), dtype=np.int64)
        active = us > cdf
        kk = 0
        while active.any() and kk < 200:
            kk += 1
            p = p * ls / kk
            cdf = cdf + p
            k[active] = kk
            active &= us > cdf
        n[small] = k
    return n


def agg_fixed(blk: np.ndarray, k: int) -> np.ndarray:
    """Aggregate consecutive groups of ``k`` rows (columns) of a (7, L) bar block."""
    if k == 1:
        return blk
    g = blk.shape[1] // k
    n2 = blk[N].reshape(g, k)
    mask = n2 > 0
    r = np.arange(g)
    first = mask.argmax(axis=1)
    last = k - 1 - mask[:, ::-1].argmax(axis=1)
    out = np.empty((7, g), dtype=np.int64)
    out[O] = blk[O].reshape(g, k)[r, first]
    out[CL] = blk[CL].reshape(g, k)[r, last]
    out[H] = np.where(mask, blk[H].reshape(g, k), _IMIN).max(axis=1)
    out[L] = np.where(mask, blk[L].reshape(g, k), _IMAX).min(axis=1)
    out[N] = n2.sum(axis=1)
    out[SP] = np.where(mask, blk[SP].reshape(g, k), _IMAX).min(axis=1)
    out[RV] = np.where(mask, blk[RV].reshape(g, k), 0).sum(axis=1)
    return out


def agg_keys(times: np.ndarray, blk: np.ndarray, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Aggregate compressed bars (no empty ones) by sorted group keys."""
    if len(keys) == 0:
        return keys, blk
    uniq, starts = np.unique(keys, return_index=True)
    ends = np.append(starts[1:], len(keys))
    out = np.empty((7, len(uniq)), dtype=np.int64)
    out[O] = blk[O][starts]
    out[CL] = blk[CL][ends - 1]
    out[H] = np.maximum.reduceat(blk[H], starts)
    out[L] = np.minimum.reduceat(blk[L], starts)
    out[N] = np.add.reduceat(blk[N], starts)
    out[SP] = np.minimum.reduceat(blk[SP], starts)
    out[RV] = np.add.reduceat(blk[RV], starts)
    return uniq, out


class _LRU:
    """An LRU map bounded by a total weight."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.weight = 0
        self.data: OrderedDict = OrderedDict()

    def get(self, key):
        v = self.data.get(key)
        if v is not None:
            self.data.move_to_end(key)
        return v

    def put(self, key, value, weight: int = 1) -> None:
        old = self.data.pop(key, None)
        if old is not None:
            self.weight -= old[1]
        self.data[key] = (value, weight)
        self.weight += weight
        while self.weight > self.budget and len(self.data) > 1:
            _, (_, w) = self.data.popitem(last=False)
            self.weight -= w

    def clear(self) -> None:
        self.data.clear()
        self.weight = 0


class Market:
    """Ticks and bars of all symbols for one SimTerminal (its clock and stall windows)."""

    def __init__(self, symbols: Sequence[SimSymbol], seed: int, tps: float, clock: BrokerClock,
                 stalls_ms: Sequence[tuple[int, int]] = (), tick_budget: int | None = None) -> None:
        self.clock = clock
        self.models: dict[str, SymbolModel] = {}
        for i, s in enumerate(symbols):
            if s.name in self.models:
                raise ValueError(f"duplicate symbol {s.name!r}")
            self.models[s.name] = SymbolModel(s, seed, tps, i)
        self.quiet = tps <= 0
        self.stalls = sorted((int(a), int(b)) for a, b in stalls_ms if b > a)
        self._raw = _LRU(400)        # (index, day) -> closed-form M1 block (pure)
        self._final = _LRU(400)      # (index, day) -> effective M1 block of a finished day
        self._hourly = _LRU(40000)   # (index, day) -> effective H1 block (7, 24) of a finished day
        self._tfd = _LRU(600_000)   # (index, day, minutes) -> aggregated block of a finished day (weight: bars)
        # (index, minute) -> (ticks, bid points), stall-filtered; ~84 bytes a tick. The budget holds
        # two minutes of every symbol (the current one and the one made ahead) at its busiest
        # hour (activity up to 1.5x): a smaller cache makes a minute again at every look, and
        # the sim's cost swamps what it serves (100,000 ticks/s: ~9 µs of CPU per tick served).
        if tick_budget is None:
            tick_budget = max(2_000_000, int(3 * sum(mdl.lam for mdl in self.models.values())))
        self._ticks = _LRU(tick_budget)
        self._last: dict[int, tuple[int, int, object]] = {}  # index -> (from_ms, until_ms, Tick)
        # Warm-ahead (see _warm_ahead): the minute being made ahead, the next model, when.
        order = list(self.models.values())
        self._warm = (order, -1, 0, 0)  # (models, minute, next index, next at broker ms)
        self._warm_ok = 2 * sum(mdl.lam for mdl in order) <= tick_budget  # two minutes fit

    # -- blocks ---------------------------------------------------------------
    def raw_day(self, mdl: SymbolModel, d: int) -> np.ndarray:
        key = (mdl.index, d)
        hit = self._raw.get(key)
        if hit is not None:
            return hit[0]
        blk = mdl.raw_days(d, 1, self.clock)
        self._raw.put(key, blk)
        return blk

    def _stalls_in(self, a_ms: int, b_ms: int) -> list[tuple[int, int]]:
        return [(s0, s1) for s0, s1 in self.stalls if s0 < b_ms and s1 > a_ms]

    def day_block(self, mdl: SymbolModel, d: int, now_bms: int) -> np.ndarray:
        """Effective M1 block (7, 1440) of broker day ``d`` as seen at broker ms ``now_bms``."""
        key = (mdl.index, d)
        hit = self._final.get(key)
        if hit is not None:
            return hit[0]
        start = d * DAY_MS
        if now_bms < start or d < HISTORY_START_DAY:
            blk = np.zeros((7, DAY_MIN), dtype=np.int64)
            return blk
        raw = self.raw_day(mdl, d)
        final = now_bms >= start + DAY_MS - 1
        stalls = self._stalls_in(start, start + DAY_MS)
        if final and not stalls:
            self._final.put(key, raw)
            return raw
        blk = raw.copy()
        if not final:
            i = (now_bms - start) // 60000
            blk[N, i + 1:] = 0
            self._patch_minute(mdl, blk, d, i, now_bms)
        for s0, s1 in stalls:
            a = max(0, (s0 - start) // 60000)
            b = min(DAY_MIN - 1, (s1 - 1 - start) // 60000)
            for i in range(a, b + 1):
                m0 = start + i * 60000
                if s0 <= m0 and m0 + 60000 <= s1:
                    blk[N, i] = 0
                elif blk[N, i] > 0:
                    self._patch_minute(mdl, blk, d, i, now_bms)
        if final:
            self._final.put(key, blk)
        return blk

    def _patch_minute(self, mdl: SymbolModel, blk: np.ndarray, d: int, i: int, now_bms: int) -> None:
        m = d * DAY_MIN + i
        arr, px, t, spr, _ = self.minute_ticks(mdl, m)
        cut = len(arr)
        if cut and t[-1] > now_bms:
            cut = int(t.searchsorted(now_bms, "right"))
        if cut == 0:
            blk[N, i] = 0
            return
        p = px[:cut]
        rv = int(arr["volume"][:cut].sum()) if mdl.trades else 0
        blk[:, i] = (int(p[0]), int(p.max()), int(p.min()), int(p[-1]), cut, int(spr[:cut].min()), rv)

    def hourly_day(self, mdl: SymbolModel, d: int, now_bms: int) -> np.ndarray:
        key = (mdl.index, d)
        hit = self._hourly.get(key)
        if hit is not None:
            return hit[0]
        if d < HISTORY_START_DAY or now_bms < d * DAY_MS:
            return np.zeros((7, 24), dtype=np.int64)
        hb = agg_fixed(self.day_block(mdl, d, now_bms), 60)
        if now_bms >= (d + 1) * DAY_MS - 1:
            self._hourly.put(key, hb)
        return hb

    def tf_day(self, mdl: SymbolModel, k_min: int, d: int, now_bms: int) -> np.ndarray:
        """Bars of ``k_min`` minutes (dividing a day) of broker day ``d``, empty ones included."""
        if k_min == 1:
            return self.day_block(mdl, d, now_bms)
        final = now_bms >= (d + 1) * DAY_MS - 1
        key = (mdl.index, d, k_min)
        if final:
            hit = self._tfd.get(key)
            if hit is not None:
                return hit[0]
        if k_min < 60:
            out = agg_fixed(self.day_block(mdl, d, now_bms), k_min)
        else:
            out = agg_fixed(self.hourly_day(mdl, d, now_bms), k_min // 60)
        if final:
            self._tfd.put(key, out, out.shape[1])
        return out

    def _prefill_hourly(self, mdl: SymbolModel, d0: int, d1: int, now_bms: int) -> None:
        """Compute finished days' H1 blocks in vectorized batches (deep D1/W1/MN1 requests)."""
        todo = [d for d in range(max(d0, HISTORY_START_DAY), d1 + 1)
                if (mdl.index, d) not in self._hourly.data and now_bms >= (d + 1) * DAY_MS - 1
                and (mdl.index, d) not in self._final.data
                and not self._stalls_in(d * DAY_MS, (d + 1) * DAY_MS)]
        if len(todo) < 8:
            return
        i = 0
        while i < len(todo):
            j = i
            while j + 1 < len(todo) and todo[j + 1] == todo[j] + 1 and j - i < 63:
                j += 1
            nd = j - i + 1
            raw = mdl.raw_days(todo[i], nd, self.clock)
            hb = agg_fixed(raw, 60)
            for q in range(nd):
                self._hourly.put((mdl.index, todo[i] + q), hb[:, q * 24:(q + 1) * 24].copy())
            i = j + 1

    # -- ticks ------------------------------------------------------------------
    def _warm_ahead(self, now_bms: int) -> None:
        """A real terminal's ticks come one by one; the sim makes a symbol's whole minute at its
        first look. Left to the minute's first poll, every symbol's minute is made in one cycle
        (50 symbols at 10,000 ticks/s: ~80 ms and 50 MB at once, a latency tail that is the sim's,
        not the daemon's). So in the last WARM_AHEAD_MS of a minute the next one is made ahead,
        a symbol at a time, spread over the window (when two minutes of every symbol fit the
        cache: else making ahead would evict what is being read)."""
        m, into = divmod(now_bms, 60000)
        if into < 60000 - WARM_AHEAD_MS:
            return
        models, minute, i, at = self._warm
        if minute != m + 1:
            minute, i, at = m + 1, 0, now_bms
        if i >= len(models) or now_bms < at:
            return
        # The ones left, over what is left of the window (a sim started late in a minute too).
        self._warm = (models, minute, i + 1, now_bms + (60000 - into) // (len(models) - i + 1))
        self.minute_ticks(models[i], minute)

    def minute_ticks(self, mdl: SymbolModel, m: int) -> tuple[np.ndarray, ...]:
        """(ticks, bid points, contiguous time_msc, spread points, raw bytes) of broker minute ``m``, stall-filtered, cached."""
        key = (mdl.index, m)
        hit = self._ticks.get(key)
        if hit is not None:
            return hit[0]
        if m < HISTORY_START_MIN or self.quiet:
            got = (EMPTY_TICKS, _EMPTY_PTS, _EMPTY_PTS, _EMPTY_PTS, _EMPTY_RAW)
        else:
            d, i = divmod(m, DAY_MIN)
            r = self.raw_day(mdl, d)[:, i]
            arr, px, spr = mdl.minute_ticks(m, int(r[O]), int(r[H]), int(r[L]), int(r[CL]), int(r[N]),
                                            int(r[RV]))
            if len(arr):
                for s0, s1 in self._stalls_in(m * 60000, m * 60000 + 60000):
                    t = arr["time_msc"]
                    keep = (t < s0) | (t >= s1)
                    arr, px, spr = arr[keep], px[keep], spr[keep]
            got = (arr, px, np.ascontiguousarray(arr["time_msc"]), spr, arr.view(np.uint8))
        self._ticks.put(key, got, max(1, len(got[0])))
        return got

    def count_upper(self, mdl: SymbolModel, m0: int, m1: int) -> int:
        """Closed-form tick count of minutes m0..m1 (before stall/now filtering)."""
        total = 0
        for d in range(m0 // DAY_MIN, m1 // DAY_MIN + 1):
            if d < HISTORY_START_DAY:
                continue
            a = max(m0 - d * DAY_MIN, 0)
            b = min(m1 - d * DAY_MIN, DAY_MIN - 1)
            total += int(self.raw_day(mdl, d)[N, a:b + 1].sum())
        return total

    def _busy_minutes(self, mdl: SymbolModel, m0: int, m1: int):
        """Minutes in [m0, m1] whose closed-form count is not zero, in order."""
        if m1 - m0 <= 3:
            yield from range(m0, m1 + 1)
            return
        for d in range(m0 // DAY_MIN, m1 // DAY_MIN + 1):
            if d < HISTORY_START_DAY:
                continue
            a = max(m0 - d * DAY_MIN, 0)
            b = min(m1 - d * DAY_MIN, DAY_MIN - 1)
            nz = np.flatnonzero(self.raw_day(mdl, d)[N, a:b + 1])
            base = d * DAY_MIN + a
            for q in nz.tolist():
                yield base + q

    def ticks(self, mdl: SymbolModel, from_ms: int, to_ms: int, limit: int | None, now_bms: int,
              flags: int) -> np.ndarray | None:
        """Ticks with from_ms <= time_msc <= to_ms (and <= now), at most ``limit``. None = too many."""
        if flags == C.COPY_TICKS_TRADE and not mdl.trades:
            return EMPTY_TICKS.copy()
        to_ms = min(to_ms, now_bms)
        if from_ms > to_ms or self.quiet:
            return EMPTY_TICKS.copy()
        if self._warm_ok:
            self._warm_ahead(now_bms)
        from_ms = max(from_ms, HISTORY_START * 1000)
        m0, m1 = from_ms // 60000, to_ms // 60000
        if m0 == m1 and limit is not None:
            # the common poll: one minute, sliced by bisection, copied as bytes
            arr, _, t, _, raw = self.minute_ticks(mdl, m0)
            ln = len(t)
            if not ln:
                return EMPTY_TICKS.copy()
            lo = int(t.searchsorted(from_ms, "left")) if from_ms > t[0] else 0
            hi = int(t.searchsorted(to_ms, "right")) if to_ms < t[-1] else ln
            hi = min(hi, lo + limit)
            if hi <= lo:
                return EMPTY_TICKS.copy()
            return raw[lo * _TSZ:hi * _TSZ].copy().view(C.TICK_DTYPE)
        unbounded = limit is None or limit > MAX_TICKS_PER_REQUEST
        cap = MAX_TICKS_PER_REQUEST + 1 if unbounded else limit
        if unbounded:
            # A request that could hold more than MAX ticks fails at once (like running out of memory).
            est = mdl.lam * (m1 - m0 + 1)
            if est > 2 * MAX_TICKS_PER_REQUEST:
                return None
            if est > MAX_TICKS_PER_REQUEST / 2 and self.count_upper(mdl, m0, m1) > MAX_TICKS_PER_REQUEST:
                return None
        parts = []
        got = 0
        for m in self._busy_minutes(mdl, m0, m1):
            arr, _, t, _, raw = self.minute_ticks(mdl, m)
            ln = len(t)
            if not ln:
                continue
            lo = 0 if m * 60000 >= from_ms else int(t.searchsorted(from_ms, "left"))
            hi = ln if t[-1] <= to_ms else int(t.searchsorted(to_ms, "right"))
            if hi <= lo:
                continue
            if hi - lo > cap - got:
                hi = lo + cap - got
            parts.append(raw[lo * _TSZ:hi * _TSZ])
            got += hi - lo
            if got >= cap:
                break
        if unbounded and got > MAX_TICKS_PER_REQUEST:
            return None
        if not parts:
            return EMPTY_TICKS.copy()
        # Byte-wise: numpy copies this packed structured dtype field by field, ~20x slower.
        if len(parts) == 1:
            return parts[0].copy().view(C.TICK_DTYPE)
        return np.concatenate(parts).view(C.TICK_DTYPE)

    def last_tick(self, mdl: SymbolModel, now_bms: int, make):
        """The newest tick at or before ``now_bms`` as ``make(row)``, or None (never ticked)."""
        hit = self._last.get(mdl.index)
        if hit is not None and hit[0] <= now_bms < hit[1]:
            return hit[2]
        if self.quiet:
            return None
        if self._warm_ok:
            self._warm_ahead(now_bms)
        m = now_bms // 60000
        arr, _, t, _, _ = self.minute_ticks(mdl, m)
        if len(arr):
            i = int(t.searchsorted(now_bms, "right"))
            if i > 0:
                until = int(t[i]) if i < len(arr) else (m + 1) * 60000
                tick = make(arr[i - 1].item())
                self._last[mdl.index] = (int(t[i - 1]), until, tick)
                return tick
        # look back for the newest minute with ticks (quiet stretches, stalls)
        d = m // DAY_MIN
        i_end = m - d * DAY_MIN - 1
        while d >= HISTORY_START_DAY:
            if i_end >= 0:
                nz = np.flatnonzero(self.raw_day(mdl, d)[N, :i_end + 1])
                for q in nz[::-1].tolist():
                    arr, _, tq, _, _ = self.minute_ticks(mdl, d * DAY_MIN + q)
                    if len(arr):
                        tick = make(arr[-1].item())
                        # valid until the current minute's first tick (if it has one yet)
                        until = int(t[0]) if len(t) else (m + 1) * 60000
                        self._last[mdl.index] = (int(tq[-1]), until, tick)
                        return tick
            d -= 1
            i_end = DAY_MIN - 1
            if d < m // DAY_MIN - 400:
                break
        return None

    # -- bars -------------------------------------------------------------------
    def bars(self, mdl: SymbolModel, tf: int, d0: int, d1: int, now_bms: int) -> tuple[np.ndarray, np.ndarray]:
        """Bars of timeframe ``tf`` opening on broker days d0..d1: (times, block), empty bars removed."""
        d0 = max(d0, HISTORY_START_DAY)
        d1 = min(d1, now_bms // DAY_MS)
        if d1 < d0 or self.quiet:  # a market with no ticks has no bars
            return np.empty(0, dtype=np.int64), np.empty((7, 0), dtype=np.int64)
        secs = C.TIMEFRAME_SECONDS[tf]
        step = secs if secs is not None and secs <= 86400 else 86400
        if step >= 3600 and d1 - d0 > 8:
            self._prefill_hourly(mdl, d0, d1, now_bms)
        parts = [self.tf_day(mdl, step // 60, d, now_bms) for d in range(d0, d1 + 1)]
        out = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)
        times = d0 * 86400 + np.arange(out.shape[1], dtype=np.int64) * step
        keep = out[N] > 0
        times, out = times[keep], out[:, keep]
        if tf == C.TIMEFRAME_W1:
            times, out = agg_keys(times, out, week_start(times))
        elif tf == C.TIMEFRAME_MN1:
            times, out = agg_keys(times, out, month_start(times))
        return times, out

    def to_rates(self, mdl: SymbolModel, times: np.ndarray, blk: np.ndarray) -> np.ndarray:
        res = np.empty(len(times), dtype=C.RATE_DTYPE)
        res["time"] = times
        res["open"] = blk[O] / mdl.scale10
        res["high"] = blk[H] / mdl.scale10
        res["low"] = blk[L] / mdl.scale10
        res["close"] = blk[CL] / mdl.scale10
        res["tick_volume"] = blk[N]
        res["spread"] = blk[SP]
        res["real_volume"] = blk[RV]
        return res


def week_start(t):
    """Broker time of the Sunday 00:00 that opens the week of ``t`` (MT5 W1 bars)."""
    return t - (t - 3 * 86400) % (7 * 86400)


def month_start(t):
    t = np.asarray(t, dtype=np.int64)
    return t.astype("datetime64[s]").astype("datetime64[M]").astype("datetime64[s]").astype(np.int64)


def bar_open(tf: int, t: int) -> int:
    """Open time of the ``tf`` bar that holds broker second ``t``."""
    secs = C.TIMEFRAME_SECONDS[tf]
    if secs is None:
        return int(month_start(np.array([t]))[0])
    if tf == C.TIMEFRAME_W1:
        return int(week_start(t))
    return t - t % secs
