"""tether: the AgentOps control plane. This module re-exports the agent SDK."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
