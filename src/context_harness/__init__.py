"""context-harness: keeps MCP credentials valid and written into opencode's config.

Kept import-free on purpose: `chctl` imports this package and must start fast. That is also why
`__version__` is a literal and not read from the installed package's metadata (importlib.metadata costs
chctl about 100 ms); tests/test_version.py keeps it equal to pyproject.toml's.
"""

__version__ = "0.1.0"
