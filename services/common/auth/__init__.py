"""Tenants, API keys and who may call what: one check for gRPC (the registration wrapper) and one for
REST (a FastAPI dependency), both over the same authenticator."""
