"""The embedded ZAYA1 model and engine."""
