"""An rpyc classic server that serves the sim terminal as its ``MetaTrader5`` module.

The same kind of bridge mt5linux runs next to a Windows terminal, with the sim
behind it: ``python -m mt5d.daemon.tools.rpyc_bridge '{"seed": 42}'`` prints its
port, then serves on 127.0.0.1. For tests and the benchmark of the rpyc
backend; loopback only (rpyc classic runs any code sent to it).
"""

from __future__ import annotations

import subprocess
import sys
import time

import msgspec


def serve(options: dict) -> None:
    import mt5d.daemon.terminal.mt5sim as sim
    from mt5d.daemon.terminal.sim import Fault, default_symbols, synthetic_symbols

    options["faults"] = [Fault(**f) for f in options.get("faults", [])]
    extra = options.pop("synthetic_symbols", 0)
    if extra:
        options["symbols"] = [*default_symbols(), *synthetic_symbols(extra)]
    shift = options.pop("clock_shift", 0.0)
    sim.configure(clock=lambda: time.time() + shift, **options)
    sys.modules["MetaTrader5"] = sim
    from rpyc.core.service import ClassicService
    from rpyc.utils.server import ThreadedServer

    server = ThreadedServer(ClassicService, hostname="127.0.0.1", port=0,
                            protocol_config={"allow_all_attrs": True})
    server.listener.listen(server.backlog)  # before the port is told: a client may connect at once
    print(server.port, flush=True)
    server.start()


class RpycBridge:
    """The bridge as a child process; ``port`` once it listens."""

    def __init__(self, **sim_options) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mt5d.daemon.tools.rpyc_bridge", msgspec.json.encode(sim_options).decode()],
            stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if not line.strip():
            self.proc.kill()
            raise RuntimeError("rpyc bridge did not start")
        self.port = int(line)

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


if __name__ == "__main__":
    serve(msgspec.json.decode(sys.argv[1]) if len(sys.argv) > 1 else {})
