"""One module per REST resource, each exposing `router`."""
