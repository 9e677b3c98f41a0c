"""Framework integrations (LangGraph, LangChain, OpenAI Agents SDK, CrewAI, AutoGen). Each is an
optional extra (`pip install 'tether[langgraph]'`) and depends on the SDK and core only."""
