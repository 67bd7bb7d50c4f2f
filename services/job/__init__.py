"""The job service: durable inference jobs accepted at once and run by Temporal workflows."""
