"""Callbacks that change a VAE's training during `fit`."""

from keras_vae.callbacks.kl_warmup import KLWarmup

__all__ = ["KLWarmup"]
