"""The thin REST edge: FastAPI routes that translate to the gRPC contracts, nothing more."""
