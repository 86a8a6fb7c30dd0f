"""Building blocks shared by two or more models."""

from .blocks import ConvDecoder, ConvEncoder, SkipConvNet, activation, mlp

__all__ = ["mlp", "activation", "ConvEncoder", "ConvDecoder", "SkipConvNet"]
