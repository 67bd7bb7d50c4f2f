"""The mesh: aisf's own xDS control plane for Envoy, and the registry of the replicas it routes to."""
