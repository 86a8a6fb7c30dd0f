"""Model families; importing this package registers each of them, and the ``codes:`` data source."""

from . import acai, ae, alae, codes, dae, hashing, nvae, photo, pixelcnn, vae, vaegan, vqvae  # noqa: F401
from .base import Autoencoder, ModelConfig, load_model, save_model

__all__ = ["Autoencoder", "ModelConfig", "load_model", "save_model"]
