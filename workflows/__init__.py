"""Durable jobs on Temporal: deterministic workflows and the activities that do their I/O."""
