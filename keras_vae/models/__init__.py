"""Builders of ready-to-train VAEs with functional encoders and decoders."""

from keras_vae.models.conv import conv_cvae, conv_decoder, conv_encoder, conv_vae
from keras_vae.models.conv1d import conv1d_decoder, conv1d_encoder, conv1d_vae
from keras_vae.models.mlp import mlp_cvae, mlp_decoder, mlp_encoder, mlp_vae

__all__ = [
    "conv1d_decoder",
    "conv1d_encoder",
    "conv1d_vae",
    "conv_cvae",
    "conv_decoder",
    "conv_encoder",
    "conv_vae",
    "mlp_cvae",
    "mlp_decoder",
    "mlp_encoder",
    "mlp_vae",
]
