"""Building blocks shared by two or more models."""

from .blocks import ConvDecoder, ConvEncoder, activation, mlp

__all__ = ["mlp", "activation", "ConvEncoder", "ConvDecoder"]
