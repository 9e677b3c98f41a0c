"""Tracing and governance for agent frameworks (LangGraph, LangChain, ...), built on the SDK."""
