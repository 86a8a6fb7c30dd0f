"""Figures and run reports."""

from .grid import image_grid, to_images

__all__ = ["image_grid", "to_images"]
