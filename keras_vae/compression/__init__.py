"""Compression for keras-vae models: pruning, quantization-aware training.

Pruning (`PruningCallback`, `strip_pruning`), sparsity reports
(`sparsity_report`), quantization-aware training (`quantize_aware`,
`QuantizationAwareTraining`) and representative datasets for post-training
quantization (`representative_dataset`). See `docs/readme/compression.md`.
"""

from keras_vae.compression.pruning import (
    MagnitudePruning,
    PruningCallback,
    magnitude_mask,
    prunable_layers,
    pruning_hooks,
    strip_pruning,
)
from keras_vae.compression.pruning_schedule import (
    ConstantSparsity,
    PolynomialDecay,
    PruningSchedule,
)
from keras_vae.compression.quantization import (
    ActivationQuantizer,
    QuantizationAwareTraining,
    QuantizeWrapper,
    SparsityPreservation,
    TiedRanges,
    is_quantization_aware,
    quantize_aware,
    set_quantization,
)
from keras_vae.compression.representative import (
    representative_arrays,
    representative_dataset,
)
from keras_vae.compression.sparsity import SparsityReport, sparsity_report

__all__ = [
    "ActivationQuantizer",
    "ConstantSparsity",
    "MagnitudePruning",
    "PolynomialDecay",
    "PruningCallback",
    "PruningSchedule",
    "QuantizationAwareTraining",
    "QuantizeWrapper",
    "SparsityPreservation",
    "SparsityReport",
    "TiedRanges",
    "is_quantization_aware",
    "magnitude_mask",
    "prunable_layers",
    "pruning_hooks",
    "quantize_aware",
    "representative_arrays",
    "representative_dataset",
    "set_quantization",
    "sparsity_report",
    "strip_pruning",
]
