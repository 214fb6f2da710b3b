"""Builders of ready-to-train VAEs with functional encoders and decoders."""

from keras_vae.models.conv import conv_decoder, conv_encoder, conv_vae
from keras_vae.models.mlp import mlp_decoder, mlp_encoder, mlp_vae

__all__ = [
    "conv_decoder",
    "conv_encoder",
    "conv_vae",
    "mlp_decoder",
    "mlp_encoder",
    "mlp_vae",
]
