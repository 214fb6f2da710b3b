"""Compression for keras-vae models: pruning, quantization-aware training.

Pruning (`PruningCallback`, `strip_pruning`), sparsity reports
(`sparsity_report`), quantization-aware training (`quantize_aware`,
`QuantizationAwareTraining`) and representative datasets for post-training
quantization (`representative_dataset`). The README's "Compression"
section has a recipe and measured results.

Modules: `pruning_schedule` (schedules), `pruning` (magnitude pruning),
`kernels` (which layers and kernels pruning and QAT handle),
`train_step_hook` (`TrainStepHook`, the base of every hook),
`quantizers` (fake-quantization layers), `qat_hooks` (QAT's hooks),
`quantization` (the QAT model transform and callback), `sparsity`,
`representative`.
"""

from keras_vae.compression.distillation import Distiller, distill
from keras_vae.compression.kernels import prunable_layers
from keras_vae.compression.pruning import (
    MagnitudePruning,
    PruningCallback,
    magnitude_mask,
    pruning_hooks,
    strip_pruning,
)
from keras_vae.compression.pruning_schedule import (
    ConstantSparsity,
    PolynomialDecay,
    PruningSchedule,
)
from keras_vae.compression.qat_hooks import SparsityPreservation, TiedRanges
from keras_vae.compression.quantization import (
    QuantizationAwareTraining,
    is_quantization_aware,
    quantize_aware,
    set_quantization,
)
from keras_vae.compression.quantizers import ActivationQuantizer, QuantizeWrapper
from keras_vae.compression.representative import (
    representative_arrays,
    representative_dataset,
    representative_examples,
)
from keras_vae.compression.sparsity import SparsityReport, sparsity_report
from keras_vae.compression.train_step_hook import TrainStepHook

__all__ = [
    "ActivationQuantizer",
    "ConstantSparsity",
    "Distiller",
    "MagnitudePruning",
    "PolynomialDecay",
    "PruningCallback",
    "PruningSchedule",
    "QuantizationAwareTraining",
    "QuantizeWrapper",
    "SparsityPreservation",
    "SparsityReport",
    "TiedRanges",
    "TrainStepHook",
    "distill",
    "is_quantization_aware",
    "magnitude_mask",
    "prunable_layers",
    "pruning_hooks",
    "quantize_aware",
    "representative_arrays",
    "representative_dataset",
    "representative_examples",
    "set_quantization",
    "sparsity_report",
    "strip_pruning",
]
