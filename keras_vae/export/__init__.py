"""Export a VAE to LiteRT (`.tflite`) and prove the file matches the model.

Example:

>>> import keras_vae  # doctest: +SKIP
>>> keras_vae.export.to_tflite(model, "vae.tflite",
...                            representative_data=x_train[:500])
>>> report = keras_vae.export.verify("vae.tflite", model, x_test[:256])

A conditional model (`keras_vae.CVAE`) calibrates on `(x, y)` and its
signatures take a `label` input (int32 class ids):

>>> keras_vae.export.to_tflite(cvae, "cvae.tflite",  # doctest: +SKIP
...                            representative_data=(x_train[:500], y_train[:500]))
>>> keras_vae.export.verify("cvae.tflite", cvae, x_test, labels=y_test)
"""

from keras_vae.export.flatbuffer import (
    TFLiteFile,
    read_tflite,
    set_metadata,
    size_report,
)
from keras_vae.export.tflite import to_tflite
from keras_vae.export.verify import (
    VerificationError,
    VerificationReport,
    verify,
)

__all__ = [
    "TFLiteFile",
    "VerificationError",
    "VerificationReport",
    "read_tflite",
    "set_metadata",
    "size_report",
    "to_tflite",
    "verify",
]
