"""Pure logic: no anyio, no NATS, no terminal. Tested as tables."""
