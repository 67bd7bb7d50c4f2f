"""The internal gRPC clients of aisf's services (router, job service), imported by every caller."""
