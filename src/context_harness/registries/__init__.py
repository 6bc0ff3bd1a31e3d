"""MCP registries (the official one at registry.modelcontextprotocol.io, or a company's own with the same API,
v0.1): the wire shapes and URLs (`api`), a server's remote resolved into what `chctl add` writes (`resolve`),
and the one bounded GET the daemon makes to a registry (`fetch`). Everything a registry sends is outside input.
"""
