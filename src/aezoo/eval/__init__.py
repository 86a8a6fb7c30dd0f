"""Metrics usable by every model."""

from .reconstruction import embed, reconstruct, reconstruction_metrics

__all__ = ["reconstruction_metrics", "reconstruct", "embed"]
