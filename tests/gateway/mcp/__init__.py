"""Tests of the MCP gateway against real upstream MCP servers."""
