"""Metrics usable by every model."""

from .reconstruction import embed, psnr_from_mse, reconstruct, reconstruction_metrics
from .restoration import corrupt_fixed, restoration_metrics, restore_batched

__all__ = ["reconstruction_metrics", "reconstruct", "embed", "psnr_from_mse", "restoration_metrics",
           "corrupt_fixed", "restore_batched"]
