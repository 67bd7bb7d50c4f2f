"""AI Serving Foundation: one invariant serving foundation for any model."""

__version__ = "0.1.0"
