"""The ASGI application: REST API, OTLP ingest, gateways mounted, console pages, metrics."""
