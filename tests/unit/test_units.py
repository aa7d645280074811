"""The systemd units in ops/: the directives the daemon relies on, and systemd-analyze.

``systemd-analyze verify`` refuses an ExecStart= binary that does not exist,
and /opt/mt5d/venv/bin/mt5d exists only on a deployed host, so the units are
verified as copies in tmp_path with that one path pointed at this Python
interpreter (everything else byte-for-byte). The template is verified as the
instance ``mt5d@12345678.service``. verify exits 0 even when it warns (unknown
key, unparsable value...), so any output that names our units fails the test.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

OPS = Path(__file__).resolve().parents[2] / "ops"
DEPLOYED_BINARY = "/opt/mt5d/venv/bin/mt5d"
INSTANCE = "12345678"
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
needs_systemd_analyze = pytest.mark.skipif(
    SYSTEMD_ANALYZE is None,
    reason="systemd-analyze not installed (apt-get install systemd); the unit files are only checked statically",
)


def directives(path: Path) -> dict[str, dict[str, list[str]]]:
    """section -> key -> values (systemd allows repeated keys, so a list)."""
    out: dict[str, dict[str, list[str]]] = {}
    section = None
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            section = out.setdefault(line[1:-1], {})
            continue
        key, sep, value = line.partition("=")
        assert sep and section is not None, f"{path.name}: bad line {raw!r}"
        section.setdefault(key.strip(), []).append(value.strip())
    return out


UNITS = {
    "mt5d.service": {
        "ExecStart": f"{DEPLOYED_BINARY} run --config /etc/mt5d/config.toml",
        "LoadCredential": "mt5-password:/etc/mt5d/credentials/mt5-password",
        "StateDirectory": "mt5d",
    },
    "mt5d@.service": {
        "ExecStart": f"{DEPLOYED_BINARY} run --config /etc/mt5d/%i.toml",
        "LoadCredential": "mt5-password:/etc/mt5d/credentials/%i/mt5-password",
        "StateDirectory": "mt5d/%i",
    },
}
COMMON = {
    "Type": "notify",
    "NotifyAccess": "main",
    "WatchdogSec": "30",
    "Restart": "on-failure",
    "RestartSec": "5",
    "RestartPreventExitStatus": "78 79",
    "TimeoutStopSec": "15",
    "DynamicUser": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "NoNewPrivileges": "yes",
    "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes",
    "ProtectKernelLogs": "yes",
    "ProtectControlGroups": "yes",
    "ProtectClock": "yes",
    "ProtectHostname": "yes",
    "RestrictNamespaces": "yes",
    "RestrictRealtime": "yes",
    "RestrictSUIDSGID": "yes",
    "LockPersonality": "yes",
    "MemoryDenyWriteExecute": "yes",
    "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
    "SystemCallArchitectures": "native",
    "CapabilityBoundingSet": "",
    "UMask": "0077",
}


@pytest.mark.parametrize("name", list(UNITS))
def test_unit_directives(name):
    service = directives(OPS / name)["Service"]
    for key, want in {**COMMON, **UNITS[name]}.items():
        assert service.get(key) == [want], f"{name}: {key}={service.get(key)} (expected {want!r})"
    assert "@system-service" in service["SystemCallFilter"]


def test_template_differs_only_by_instance():
    single = directives(OPS / "mt5d.service")["Service"]
    template = directives(OPS / "mt5d@.service")["Service"]
    assert set(single) == set(template)
    differing = {k for k in single if single[k] != template[k]}
    assert differing == {"ExecStart", "LoadCredential", "StateDirectory"}


def _copies(tmp_path: Path) -> list[Path]:
    out = []
    for src, dst in (("mt5d.service", "mt5d.service"), ("mt5d@.service", f"mt5d@{INSTANCE}.service")):
        text = (OPS / src).read_text()
        assert text.count(DEPLOYED_BINARY) == 1
        (tmp_path / dst).write_text(text.replace(DEPLOYED_BINARY, sys.executable))
        out.append(tmp_path / dst)
    return out


@needs_systemd_analyze
def test_systemd_analyze_verify(tmp_path):
    units = _copies(tmp_path)
    proc = subprocess.run([SYSTEMD_ANALYZE, "verify", *map(str, units)],
                          capture_output=True, text=True, timeout=60)
    output = (proc.stdout + proc.stderr).strip()
    ours = [line for line in output.splitlines() if "mt5d" in line or str(tmp_path) in line]
    assert proc.returncode == 0, output
    assert not ours, "systemd-analyze verify warned:\n" + "\n".join(ours)


@needs_systemd_analyze
@pytest.mark.parametrize("unit", ["mt5d.service", f"mt5d@{INSTANCE}.service"])
def test_systemd_analyze_security_exposure(tmp_path, unit):
    _copies(tmp_path)
    proc = subprocess.run([SYSTEMD_ANALYZE, "security", "--offline=yes", "--no-pager", str(tmp_path / unit)],
                          capture_output=True, text=True, timeout=60)
    if proc.returncode != 0 and "offline" in proc.stderr.lower():
        pytest.skip(f"systemd-analyze too old for security --offline: {proc.stderr.strip()}")
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", proc.stdout)
    assert m, proc.stdout + proc.stderr
    # 1.2 with systemd 252; the scale is 0 (locked down) .. 10 (unprotected).
    assert float(m.group(1)) <= 2.0, proc.stdout
