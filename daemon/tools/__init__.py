"""Tools built on the daemon: the benchmark, the RPC benchmark, the rpyc test bridge."""
