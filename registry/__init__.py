"""A highly available MCP Mesh registry: an LMDB event log, a pure view, the agent protocol."""

__version__ = "0.1.0"
