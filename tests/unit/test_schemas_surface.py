"""The public surface: what a subscriber imports, and nothing it should not need."""

from __future__ import annotations

import subprocess
import sys

import schemas


def test_all_names_resolve():
    for name in schemas.__all__:
        assert getattr(schemas, name) is not None, name


def test_importing_schemas_pulls_in_no_daemon_code_and_no_numpy():
    code = ("import sys, schemas, schemas.client, schemas.rpc; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'daemon', 'actors', 'numpy', 'anyio'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
