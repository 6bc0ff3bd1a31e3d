"""The daemon's side of a bridged MCP session: one upstream connection to the remote MCP server per bridge."""
