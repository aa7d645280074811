"""Contract terms by asset class: what ``symbol_info`` reports beyond ``SimSymbol``'s own fields.

Values of the kind retail brokers publish: FX and crypto triple their swap on
Wednesday / Friday rollover, indices and stocks on Friday (weekend financing);
stock CFDs charge swap in money per share, the rest in points; indices and
metals keep a stops level (points from the price a stop may sit); every class
fills market orders FOK or IOC (``filling_mode`` 1|2), allows every
expiration kind (GTC|DAY|SPECIFIED|SPECIFIED_DAY = 15) and order type (127).
"""

from __future__ import annotations

from dataclasses import dataclass

from mt5d.daemon.terminal import mt5_constants as C

__all__ = ["ClassSpec", "class_spec"]


@dataclass(frozen=True)
class ClassSpec:
    stops_level: int = 0  # SYMBOL_TRADE_STOPS_LEVEL, points
    freeze_level: int = 0  # SYMBOL_TRADE_FREEZE_LEVEL, points
    swap_mode: int = C.SYMBOL_SWAP_MODE_POINTS
    swap_rollover3days: int = C.DAY_OF_WEEK_WEDNESDAY
    exemode: int = C.SYMBOL_TRADE_EXECUTION_MARKET
    filling_mode: int = 3  # SYMBOL_FILLING_FOK | SYMBOL_FILLING_IOC
    expiration_mode: int = 15
    order_mode: int = 127


_SPECS = {
    "Forex": ClassSpec(),
    "Metals": ClassSpec(stops_level=10, freeze_level=5),
    "Indices": ClassSpec(stops_level=20, freeze_level=10, swap_rollover3days=C.DAY_OF_WEEK_FRIDAY),
    "Stocks": ClassSpec(stops_level=5, swap_mode=C.SYMBOL_SWAP_MODE_CURRENCY_SYMBOL,
                        swap_rollover3days=C.DAY_OF_WEEK_FRIDAY),
    "Crypto": ClassSpec(stops_level=100, swap_rollover3days=C.DAY_OF_WEEK_FRIDAY),
}


def class_spec(category: str) -> ClassSpec:
    """The terms of a symbol's class (``SimSymbol.category``); FX-like for any other class."""
    return _SPECS.get(category, _SPECS["Forex"])
