"""The daemon: settings, logging, RPC server, refresher, startup and shutdown."""
