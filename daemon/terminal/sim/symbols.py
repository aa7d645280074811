"""The sim's symbol catalogue."""

from __future__ import annotations

from dataclasses import dataclass, replace

from mt5d.daemon.terminal import mt5_constants as C

__all__ = ["SimSymbol", "default_symbols", "synthetic_symbols"]


@dataclass(frozen=True)
class SimSymbol:
    """One instrument of the simulated broker.

    ``price`` is the level the random path wanders around, ``spread`` the
    typical spread in points, ``volatility`` the relative daily volatility and
    ``rate`` the tick-rate multiplier relative to ``ticks_per_second``.
    ``trades`` marks exchange-like CFDs whose ticks carry ``last`` and
    ``volume`` (flags LAST|VOLUME); ``activity`` is how much the tick rate
    follows the trading sessions (0 = flat); ``selected`` is the Market Watch
    default.
    """

    name: str
    digits: int
    price: float
    spread: int
    description: str
    path: str
    currency_base: str
    currency_profit: str
    currency_margin: str = ""
    calc_mode: int = C.SYMBOL_CALC_MODE_FOREX
    contract_size: float = 100000.0
    volatility: float = 0.005
    rate: float = 1.0
    trades: bool = False
    volume_unit: int = 1
    activity: float = 0.3
    selected: bool = True
    volume_min: float = 0.01
    volume_max: float = 500.0
    volume_step: float = 0.01
    swap_long: float = -0.5
    swap_short: float = -0.5
    exchange: str = ""
    isin: str = ""
    category: str = ""
    # Depth of market levels per side (SYMBOL_TICKS_BOOKDEPTH); 0: no book.
    book_depth: int = 10
    # Another symbol's name: share its quote stream (same bid path, tick times and counts
    # when price/volatility/rate/activity match), with this symbol's own spread.
    feed: str = ""

    @property
    def point(self) -> float:
        return 1.0 / 10**self.digits


def _fx(name: str, digits: int, price: float, spread: int, desc: str, *, rate: float = 1.0,
        vol: float = 0.005, path: str | None = None, selected: bool = True,
        base: str | None = None, profit: str | None = None) -> SimSymbol:
    base = base or name[:3]
    profit = profit or name[3:6]
    return SimSymbol(
        name=name, digits=digits, price=price, spread=spread, description=desc,
        path=path or f"Forex\\{name}", currency_base=base, currency_profit=profit, currency_margin=base,
        volatility=vol, rate=rate, selected=selected, category="Forex",
    )


def default_symbols() -> tuple[SimSymbol, ...]:
    """The catalogue: FX majors and crosses, metals, index CFDs, a stock CFD, a suffixed symbol."""
    return (
        _fx("EURUSD", 5, 1.08500, 8, "Euro vs US Dollar", rate=1.3),
        _fx("GBPUSD", 5, 1.27000, 11, "Great Britain Pound vs US Dollar", rate=1.2),
        _fx("USDJPY", 3, 150.500, 10, "US Dollar vs Japanese Yen", rate=1.2, vol=0.006),
        _fx("USDCHF", 5, 0.88000, 13, "US Dollar vs Swiss Franc", rate=0.9),
        _fx("AUDUSD", 5, 0.66000, 10, "Australian Dollar vs US Dollar", rate=1.0, vol=0.006),
        _fx("USDCAD", 5, 1.36000, 14, "US Dollar vs Canadian Dollar", rate=0.9),
        _fx("NZDUSD", 5, 0.61000, 15, "New Zealand Dollar vs US Dollar", rate=0.7, vol=0.006),
        _fx("EURGBP", 5, 0.85500, 12, "Euro vs Great Britain Pound", rate=0.8, vol=0.004),
        _fx("EURJPY", 3, 163.200, 17, "Euro vs Japanese Yen", rate=0.9, vol=0.006),
        # A broker-suffixed variant (mini account): the EURUSD feed with a wider spread.
        replace(_fx("EURUSD.m", 5, 1.08500, 15, "Euro vs US Dollar (mini)", rate=1.3,
                    path="Forex\\Mini\\EURUSD.m", selected=False, base="EUR", profit="USD"),
                feed="EURUSD", book_depth=0),
        SimSymbol(
            name="XAUUSD", digits=2, price=2350.00, spread=25, description="Gold vs US Dollar",
            path="Metals\\XAUUSD", currency_base="XAU", currency_profit="USD", currency_margin="XAU",
            calc_mode=C.SYMBOL_CALC_MODE_FOREX, contract_size=100.0, volatility=0.010, rate=1.5,
            category="Metals",
        ),
        SimSymbol(
            name="XAGUSD", digits=3, price=28.500, spread=30, description="Silver vs US Dollar",
            path="Metals\\XAGUSD", currency_base="XAG", currency_profit="USD", currency_margin="XAG",
            calc_mode=C.SYMBOL_CALC_MODE_FOREX, contract_size=5000.0, volatility=0.018, rate=0.8,
            selected=False, category="Metals",
        ),
        SimSymbol(
            name="US30", digits=1, price=39000.0, spread=20, description="Dow Jones Industrial Average Index CFD",
            path="Indices\\US30", currency_base="USD", currency_profit="USD", currency_margin="USD",
            calc_mode=C.SYMBOL_CALC_MODE_CFDINDEX, contract_size=1.0, volatility=0.010, rate=1.1,
            trades=True, volume_unit=1, volume_min=0.1, volume_max=100.0, volume_step=0.1,
            swap_long=-5.2, swap_short=-1.8, category="Indices",
        ),
        SimSymbol(
            name="GER40", digits=1, price=18500.0, spread=15, description="Germany 40 Index CFD",
            path="Indices\\GER40", currency_base="EUR", currency_profit="EUR", currency_margin="EUR",
            calc_mode=C.SYMBOL_CALC_MODE_CFDINDEX, contract_size=1.0, volatility=0.011, rate=1.0,
            trades=True, volume_unit=1, volume_min=0.1, volume_max=100.0, volume_step=0.1,
            swap_long=-3.1, swap_short=-0.9, category="Indices",
        ),
        SimSymbol(
            name="#AAPL", digits=2, price=190.00, spread=5, description="Apple Inc. (stock CFD)",
            path="Stocks\\US\\#AAPL", currency_base="USD", currency_profit="USD", currency_margin="USD",
            calc_mode=C.SYMBOL_CALC_MODE_CFD, contract_size=1.0, volatility=0.015, rate=0.5,
            trades=True, volume_unit=100, selected=False, volume_min=1.0, volume_max=10000.0,
            volume_step=1.0, swap_long=-0.03, swap_short=-0.01, exchange="NASDAQ",
            isin="US0378331005", category="Stocks",
        ),
        SimSymbol(
            name="BTCUSD", digits=2, price=65000.00, spread=1500, description="Bitcoin vs US Dollar",
            path="Crypto\\BTCUSD", currency_base="BTC", currency_profit="USD", currency_margin="BTC",
            calc_mode=C.SYMBOL_CALC_MODE_CFD, contract_size=1.0, volatility=0.03, rate=0.8,
            selected=False, volume_min=0.01, volume_max=10.0, swap_long=-20.0, swap_short=-20.0,
            category="Crypto", book_depth=0,
        ),
    )


def synthetic_symbols(n: int) -> tuple[SimSymbol, ...]:
    """``n`` extra FX-like symbols ``SYN000``... (for load tests), not in Market Watch by default."""
    out = []
    for i in range(int(n)):
        price = round(0.6 + (i * 0.37) % 1.2, 5)
        out.append(SimSymbol(
            name=f"SYN{i:03d}", digits=5, price=price, spread=8 + i % 7,
            description=f"Synthetic FX pair {i}", path=f"Synthetic\\SYN{i:03d}",
            currency_base="SYN", currency_profit="USD", currency_margin="SYN",
            volatility=0.005, rate=1.0, activity=0.0, selected=False, category="Synthetic",
        ))
    return tuple(out)
