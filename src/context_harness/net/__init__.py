"""How the daemon reaches servers: the proxy for each URL, the certificates it trusts, and what a failure means."""
