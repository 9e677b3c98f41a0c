"""The agent SDK: private `_*.py` modules, re-exported from `tether` (import `tether`, not this)."""
