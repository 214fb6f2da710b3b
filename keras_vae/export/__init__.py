"""Export a VAE to LiteRT (`.tflite`) and prove the file matches the model.

Example:

>>> import keras_vae  # doctest: +SKIP
>>> keras_vae.export.to_tflite(model, "vae.tflite",
...                            representative_data=x_train[:500])
>>> report = keras_vae.export.verify("vae.tflite", model, x_test[:256])
"""

from keras_vae.export.flatbuffer import TFLiteFile, read_tflite, size_report
from keras_vae.export.tflite import to_tflite
from keras_vae.export.verify import (
    VerificationError,
    VerificationReport,
    nll_from_mean,
    verify,
)

__all__ = [
    "TFLiteFile",
    "VerificationError",
    "VerificationReport",
    "nll_from_mean",
    "read_tflite",
    "size_report",
    "to_tflite",
    "verify",
]
