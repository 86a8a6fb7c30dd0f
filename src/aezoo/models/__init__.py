"""Model families; importing this package registers each of them, and the ``codes:`` data source."""

from . import ae, codes, dae, hashing, pixelcnn, vae, vqvae  # noqa: F401
from .base import Autoencoder, ModelConfig, load_model, save_model

__all__ = ["Autoencoder", "ModelConfig", "load_model", "save_model"]
