"""The MCP gateway: upstream MCP servers aggregated behind /mcp, every call governed."""
