"""Auxiliary tasks and loss weightings that plug into any primary-task training loop."""
