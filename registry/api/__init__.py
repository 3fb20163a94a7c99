"""The HTTP surface: agent protocol, the deployment guide's REST API, ops endpoints."""
