"""context-harness: keeps MCP credentials valid and written into opencode's config.

Kept import-free on purpose: `chctl` imports this package and must start fast.
"""

__version__ = "0.1.0"
