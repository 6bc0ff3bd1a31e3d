"""OAuth 2.1 client for MCP servers: discovery, registration, PKCE, token requests, loopback callback."""
