"""Figures and run reports."""

from .grid import grid_of, image_grid, reconstruction_grid, to_images

__all__ = ["image_grid", "to_images", "grid_of", "reconstruction_grid"]
