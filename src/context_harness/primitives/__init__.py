"""Plain data shared by every layer: results, error codes, MCP servers, OAuth tokens."""
