"""The daemon's domain workers: the refresher, the notifier, logins in progress, the bridge relay, delegation to
another machine's daemon, and `chctl check`'s probes. The process around them (sockets, RPC, settings) is `daemon/`."""
