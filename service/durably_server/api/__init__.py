"""The gRPC services: thin adapters between the wire (via `convert`) and the executor."""
