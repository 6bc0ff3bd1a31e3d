"""Agent config files: JSONC parsing and surgical edits, opencode's format."""
