"""The public surface: what a subscriber imports, and nothing it should not need."""

from __future__ import annotations

import subprocess
import sys

import mt5d


def test_all_names_resolve():
    for name in mt5d.__all__:
        assert getattr(mt5d, name) is not None, name


def test_importing_the_contract_pulls_in_no_daemon_code_and_no_numpy():
    code = ("import sys, mt5d, mt5d.client, mt5d.rpc; "
            "print(sorted({m for m in sys.modules if m.split('.')[0] in ('numpy', 'anyio', 'opentelemetry')"
            " or m.startswith(('mt5d.daemon', 'mt5d.actors'))}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
