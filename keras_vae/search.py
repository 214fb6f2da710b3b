"""Architecture search: the smallest, fastest VAE that is still good enough.

`search` runs a KerasTuner search over the hyperparameters of the
keras-vae builders (`VAEHyperModel`: MLP widths and depth, convolution
filters and depth, decoder block, latent size, likelihood). Every trial
trains a candidate (from scratch, or distilled from a `teacher`), then
scores it on quality (test negative ELBO, optionally the IWAE bound) and
on cost (parameters, bytes of its full-int8 `.tflite` file, and LiteRT
int8 latency at batch 1, measured in the trial). The result holds every
trial and the Pareto front; the models and `.tflite` files stay in the
trial folders of the KerasTuner project, so an interrupted search resumes
where it stopped (same `directory` and `project_name`).
`keras_vae.plotting.pareto` draws the front.

Example:

>>> import keras_vae  # doctest: +SKIP
>>> (x_train, _), (x_test, _) = keras_vae.datasets.load("mnist5k")
>>> result = keras_vae.search.search(x_train, x_test, max_trials=30,
...                                  max_minutes=30, epochs=30)
>>> for record in result.front:
...     print(record["architecture"], record["negative_elbo"],
...           record["latency_us"])
>>> keras_vae.plotting.pareto(result.trials, "pareto.png")
"""

import json
import math
import numbers
import os
import subprocess
import sys
import time

import keras
import numpy as np

from keras_vae import _validation, files, metrics, models

#: Quality measures a search can rank trials by (lower is better).
QUALITIES = {"elbo": "negative_elbo", "iwae": "iwae_nll"}
#: Costs measured in every trial (lower is better).
COSTS = ("params", "tflite_bytes", "latency_us")
_RECORD = "record.json"


def _import_keras_tuner():
    try:
        import keras_tuner
    except ImportError:  # pragma: no cover - a declared dependency
        raise ImportError(
            "keras_vae.search needs KerasTuner: `pip install keras-tuner`"
        ) from None
    return keras_tuner


def _choices(values, name):
    values = tuple(values)
    if not values:
        raise ValueError(
            f"Expected at least one value in `{name}`. Received: {name}=()"
        )
    return values


def _hyper_model_base():
    return _import_keras_tuner().HyperModel


class VAEHyperModel(_hyper_model_base()):
    """The search space: keras-vae builders and the values to try.

    `build(hp)` returns a compiled `keras_vae.VAE`. With several `kinds`
    the builder itself is a hyperparameter (`model`) and each builder's
    hyperparameters are active only when it is chosen. A depth of d uses
    the first d width (or filter) hyperparameters; the decoder mirrors the
    encoder, as in the builders.

    Args:
        input_shape: tuple of ints. Per-example data shape.
        kinds: tuple of str. `"mlp"` (`models.mlp_vae`) and/or `"conv"`
            (`models.conv_vae`, images only).
        latent_dims: tuple of ints. Latent sizes.
        mlp_depths: tuple of ints. Numbers of hidden layers.
        mlp_widths: tuple of ints. Widths of each hidden layer.
        conv_depths: tuple of ints. Numbers of stride-2 blocks.
        conv_filters: tuple of ints. Filters of each block.
        decoder_blocks: tuple of str. `"transpose"` and/or `"upsample"`.
        likelihoods: tuple of str. Likelihood names to try; compare only
            likelihoods whose values are densities of the same data (e.g.
            `"gaussian_global"` and `"gaussian_per_pixel"`).
        learning_rate: float > 0, or a tuple of them. Adam learning rate
            of every candidate; with several values the learning rate is a
            hyperparameter too (`learning_rate`): with a fixed budget of
            epochs a smaller network may need a larger step to converge.
        seed: int or None. Seed of the built models' sampling noise.

    Example:

    >>> import keras_tuner, keras_vae
    >>> space = keras_vae.search.VAEHyperModel((8, 8, 1), latent_dims=(2,))
    >>> model = space.build(keras_tuner.HyperParameters())
    >>> model.latent_dim
    2
    """

    def __init__(
        self,
        input_shape,
        kinds=("mlp",),
        latent_dims=(4, 8, 16, 32),
        mlp_depths=(1, 2),
        mlp_widths=(32, 64, 128, 256, 512),
        conv_depths=(1, 2, 3),
        conv_filters=(8, 16, 32, 64),
        decoder_blocks=("transpose", "upsample"),
        likelihoods=("bernoulli",),
        learning_rate=1e-3,
        seed=None,
    ):
        super().__init__(name="keras_vae_search_space")
        self.input_shape = tuple(int(d) for d in input_shape)
        self.kinds = _choices(kinds, "kinds")
        unknown = [kind for kind in self.kinds if kind not in ("mlp", "conv")]
        if unknown:
            raise ValueError(
                "Expected `kinds` among ('mlp', 'conv'). Received: "
                f"kinds={self.kinds!r}"
            )
        if "conv" in self.kinds and len(self.input_shape) != 3:
            raise ValueError(
                "The `conv` builder needs images `(height, width, "
                "channels)`; search `kinds=('mlp',)` for other data. "
                f"Received: input_shape={self.input_shape}"
            )
        self.latent_dims = _choices(latent_dims, "latent_dims")
        self.mlp_depths = _choices(mlp_depths, "mlp_depths")
        self.mlp_widths = _choices(mlp_widths, "mlp_widths")
        self.conv_depths = _choices(conv_depths, "conv_depths")
        self.conv_filters = _choices(conv_filters, "conv_filters")
        self.decoder_blocks = _choices(decoder_blocks, "decoder_blocks")
        self.likelihoods = _choices(likelihoods, "likelihoods")
        rates = (tuple(learning_rate)
                 if isinstance(learning_rate, (tuple, list))
                 else (learning_rate,))
        rates = _choices(rates, "learning_rate")
        for rate in rates:
            if (isinstance(rate, (bool, np.bool_))
                    or not isinstance(rate, numbers.Real)
                    or not math.isfinite(rate) or rate <= 0):
                raise ValueError(
                    "Expected `learning_rate` to be a positive finite number "
                    "or a tuple of them. Received: "
                    f"learning_rate={learning_rate!r}"
                )
        self.learning_rates = tuple(float(rate) for rate in rates)
        self.learning_rate = self.learning_rates[0]
        self.seed = seed

    def _layers(self, hp, prefix, depths, values):
        depth = hp.Choice(f"{prefix}_depth", list(depths))
        sizes = []
        for index in range(max(depths)):
            # The i-th size exists only for depths that use it.
            used = [d for d in depths if d > index]
            with hp.conditional_scope(f"{prefix}_depth", used):
                value = hp.Choice(f"{prefix}_{index}", list(values))
            if index < depth:
                sizes.append(value)
        return tuple(sizes)

    def _mlp(self, hp, common):
        hidden = self._layers(hp, "mlp_units", self.mlp_depths,
                              self.mlp_widths)
        return models.mlp_vae(self.input_shape, hidden_units=hidden, **common)

    def _conv(self, hp, common):
        filters = self._layers(hp, "conv_filters", self.conv_depths,
                               self.conv_filters)
        block = hp.Choice("decoder_block", list(self.decoder_blocks))
        return models.conv_vae(self.input_shape, filters=filters,
                               decoder_block=block, **common)

    def build(self, hp):
        common = {
            "latent_dim": hp.Choice("latent_dim", list(self.latent_dims)),
            "likelihood": hp.Choice("likelihood", list(self.likelihoods)),
            "seed": self.seed,
        }
        kind = hp.Choice("model", list(self.kinds))
        builders = {"mlp": self._mlp, "conv": self._conv}
        model = None
        for name, build in builders.items():
            if name not in self.kinds:
                continue
            with hp.conditional_scope("model", [name]):
                if kind == name:
                    model = build(hp, common)
        rate = self.learning_rate
        if len(self.learning_rates) > 1:
            rate = hp.Choice("learning_rate", list(self.learning_rates))
        model.compile(optimizer=keras.optimizers.Adam(rate))
        return model


def describe(model):
    """A short text naming a VAE's architecture, e.g. `mlp 784-64-16`.

    Args:
        model: `keras_vae.VAE`.

    Returns:
        str.
    """
    sizes = [str(math.prod(model.input_spec_shape))]
    kind = "mlp"
    for layer in model.encoder.layers:
        if isinstance(layer, keras.layers.Dense) and layer.name not in (
            "z_mean", "z_log_var"
        ):
            sizes.append(str(layer.units))
        elif isinstance(layer, keras.layers.Conv2D):
            kind = "conv"
            sizes.append(f"c{layer.filters}")
    sizes.append(str(model.latent_dim))
    return f"{kind} {'-'.join(sizes)}"


def pareto_front(records, objectives=("negative_elbo", "params",
                                      "latency_us")):
    """The records no other record dominates on `objectives` (all minimised).

    Record a dominates b when a is no worse on every objective and better
    on at least one. Records missing an objective are left out.

    Args:
        records: list of dicts.
        objectives: tuple of str. Keys to minimise.

    Returns:
        list of dicts, ordered by the first cost (the second objective).

    Example:

    >>> from keras_vae.search import pareto_front
    >>> points = [{"q": 1, "c": 3}, {"q": 2, "c": 1}, {"q": 2, "c": 4}]
    >>> pareto_front(points, ("q", "c"))
    [{'q': 2, 'c': 1}, {'q': 1, 'c': 3}]
    """
    objectives = tuple(objectives)
    usable = [r for r in records
              if all(r.get(key) is not None for key in objectives)]

    def dominates(a, b):
        pairs = [(a[key], b[key]) for key in objectives]
        return all(x <= y for x, y in pairs) and any(x < y for x, y in pairs)

    front = [r for r in usable
             if not any(dominates(other, r) for other in usable)]
    order = objectives[1] if len(objectives) > 1 else objectives[0]
    return sorted(front, key=lambda r: r[order])


def dominating(records, reference, objectives=("negative_elbo", "params",
                                               "latency_us")):
    """Records at least as good as `reference` on every objective, better on one.

    Args:
        records: list of dicts.
        reference: dict. The record to beat, with the same keys.
        objectives: tuple of str. Keys to minimise.

    Returns:
        list of dicts.
    """
    return [
        r for r in records
        if all(r.get(k) is not None and r[k] <= reference[k]
               for k in objectives)
        and any(r[k] < reference[k] for k in objectives)
    ]


# ------------------------------------------------------------ the costs
def litert_latency(path, signature="reconstruct", runs=300, warmup=30,
                   block=10, num_threads=1, seed=0):
    """Batch-1 latency of one signature of a `.tflite` file, in microseconds.

    Runs the signature with the LiteRT interpreter on random inputs of the
    right shape (images uniform in [0, 1], codes standard normal), `runs`
    times after `warmup` calls, reading the wall clock and this thread's
    CPU clock once per `block` calls. With one interpreter thread the CPU
    time counts only the inference work, the steadier figure on a shared
    machine.

    Args:
        path: str. The `.tflite` file.
        signature: str. Signature key.
        runs: int > 0. Timed calls.
        warmup: int >= 0. Untimed calls first.
        block: int > 0. Calls per clock reading.
        num_threads: int > 0. Interpreter threads.
        seed: int. Seed of the random input.

    Returns:
        dict: `latency_us` (median thread CPU time per call),
        `latency_wall_us` (median wall time per call) and
        `latency_kernels`: `"xnnpack"`, or `"builtin"` when XNNPACK refused
        the file and LiteRT's own kernels were timed.
    """
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    def signature_runner(**options):
        interpreter = Interpreter(model_path=os.fspath(path),
                                  num_threads=num_threads, **options)
        return interpreter.get_signature_runner(signature)

    runner = signature_runner()
    (name, detail), = runner.get_input_details().items()
    shape = [1, *[int(d) for d in detail["shape_signature"][1:]]]
    rng = np.random.default_rng(seed)
    value = (rng.standard_normal(shape) if name == "z"
             else rng.uniform(0.0, 1.0, shape)).astype(np.float32)
    kernels = "xnnpack"
    try:
        runner(**{name: value})
    except RuntimeError as error:
        # XNNPACK refuses some int8 layers whose scales fall outside the
        # ratios it supports (it depends on the trained weights); LiteRT's
        # own kernels still run them, so time those and say so.
        if "XNNPACK" not in str(error):
            raise
        runner = signature_runner(
            experimental_op_resolver_type=(
                OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES))
        kernels = "builtin"
    for _ in range(warmup):
        runner(**{name: value})
    wall, cpu = [], []
    for _ in range(max(1, runs // block)):
        cpu_start, wall_start = time.thread_time_ns(), time.perf_counter_ns()
        for _ in range(block):
            runner(**{name: value})
        wall.append((time.perf_counter_ns() - wall_start) / block / 1e3)
        cpu.append((time.thread_time_ns() - cpu_start) / block / 1e3)
    return {"latency_us": float(np.median(cpu)),
            "latency_wall_us": float(np.median(wall)),
            "latency_kernels": kernels}


def int8_costs(model, directory, calibration, x_verify=None, latency_runs=300,
               overwrite=True):
    """Export `model` to full-int8 `.tflite` in `directory` and measure it.

    On the TensorFlow backend the export runs here; on another backend the
    model is saved and a TensorFlow child process exports and times it.

    Args:
        model: `keras_vae.VAE`.
        directory: str. Where `model_int8.tflite` is written.
        calibration: array. Representative inputs for int8 calibration.
        x_verify: array or None. When given, `keras_vae.export.verify`
            runs the file on it and the NLL change is reported.
        latency_runs: int > 0. Timed batch-1 calls.
        overwrite: bool. Replace an existing file.

    Returns:
        dict: `tflite_path`, `tflite_bytes`, `latency_us`,
        `latency_wall_us` and, with `x_verify`, `verify_nll_delta_pct`.
    """
    os.makedirs(directory, exist_ok=True)
    if keras.backend.backend() != "tensorflow":
        return _int8_costs_in_tensorflow(model, directory, calibration,
                                         x_verify, latency_runs)
    from keras_vae import export

    path = os.path.join(directory, "model_int8.tflite")
    info = export.to_tflite(model, path, quantization="int8",
                            representative_data=calibration,
                            overwrite=overwrite)
    costs = {"tflite_path": path, "tflite_bytes": int(info.num_bytes)}
    costs.update(litert_latency(path, runs=latency_runs))
    if x_verify is not None:
        report = export.verify(path, model, x_verify)
        costs["verify_nll_delta_pct"] = _nll_delta(report)
    return costs


def _nll_delta(report):
    value = getattr(report, "nll_delta_pct", None)
    return None if value is None else float(value)


def _int8_costs_in_tensorflow(model, directory, calibration, x_verify,
                              latency_runs):
    model_path = os.path.join(directory, "model_for_export.keras")
    files.save_model(model, model_path, overwrite=True)
    data_path = os.path.join(directory, "export_data.npz")
    arrays = {"calibration": np.asarray(calibration, "float32")}
    if x_verify is not None:
        arrays["x_verify"] = np.asarray(x_verify, "float32")
    with files.atomic_write(data_path, overwrite=True) as temporary:
        with open(temporary, "wb") as handle:
            np.savez(handle, **arrays)
    env = dict(os.environ, KERAS_BACKEND="tensorflow",
               TF_CPP_MIN_LOG_LEVEL="3")
    command = [sys.executable, "-c",
               "import sys; from keras_vae import search; "
               "search._int8_costs_child(*sys.argv[1:])",
               model_path, data_path, directory, str(latency_runs)]
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    lines = [line for line in result.stdout.splitlines()
             if line.startswith("{")]
    if result.returncode != 0 or not lines:
        raise RuntimeError(
            "The TensorFlow process that exports the candidate to int8 "
            f"failed ({result.returncode}): {result.stderr[-2000:]}"
        )
    return json.loads(lines[-1])


def _int8_costs_child(model_path, data_path, directory, latency_runs):
    """Entry point of the TensorFlow child process of `int8_costs`."""
    model = files.load_model(model_path, compile=False)
    data = np.load(data_path)
    x_verify = data["x_verify"] if "x_verify" in data.files else None
    costs = int8_costs(model, directory, data["calibration"], x_verify,
                       int(latency_runs))
    print(json.dumps(costs), flush=True)


# ------------------------------------------------------------ the tuner
class _Deadline:
    """Seconds left of a search budget (None: no time limit)."""

    def __init__(self, minutes):
        self.end = None if minutes is None else (
            time.monotonic() + 60.0 * float(minutes))

    def passed(self):
        return self.end is not None and time.monotonic() >= self.end


def _tuner_base():
    return _import_keras_tuner().Tuner


class VAETuner(_tuner_base()):
    """KerasTuner tuner whose trials train, score and export a candidate.

    Built by `search`; use it directly for another oracle. `run_trial`
    trains the model `hypermodel.build(hp)` returns (or distils it from
    `teacher`), saves it as `model.keras` in the trial folder, scores it
    and, with `litert=True`, exports `model_int8.tflite` and times it. The
    full record is written to the trial folder as `record.json`; the
    oracle sees every numeric field.

    Args:
        oracle: `keras_tuner.Oracle`.
        hypermodel: `VAEHyperModel` or another `keras_tuner.HyperModel`
            returning compiled `keras_vae.VAE` models.
        max_minutes: float or None. No trial starts after this many
            minutes of the current `search` call.
        **kwargs: `directory`, `project_name`, `overwrite` as in
            `keras_tuner.Tuner`.
    """

    def __init__(self, oracle, hypermodel, max_minutes=None, **kwargs):
        super().__init__(oracle=oracle, hypermodel=hypermodel, **kwargs)
        self.max_minutes = max_minutes
        self._deadline = _Deadline(max_minutes)

    def on_search_begin(self):
        super().on_search_begin()
        self._deadline = _Deadline(self.max_minutes)

    def pre_create_trial(self):
        super().pre_create_trial()
        if self._deadline.passed():
            # The oracle stops handing out trials; its saved state does not
            # keep this, so a resumed search has the full budget again.
            self.oracle.max_trials = len(self.oracle.trials)

    def run_trial(self, trial, x_train, x_test, verbose=None, seed=0,
                  **options):
        # `verbose` is KerasTuner's display setting; candidates train quietly.
        del verbose
        hp = trial.hyperparameters
        trial_seed = int(seed) + int(trial.trial_id)
        keras.utils.set_random_seed(trial_seed)
        model = self.hypermodel.build(hp)
        record = train_and_measure(
            model, x_train, x_test, self.get_trial_dir(trial.trial_id),
            seed=trial_seed,
            extra={"trial_id": trial.trial_id,
                   "hyperparameters": dict(hp.values)},
            **options)
        return {key: float(value) for key, value in record.items()
                if isinstance(value, (int, float))
                and not isinstance(value, bool)}


def train_and_measure(model, x_train, x_test, directory, epochs=30,
                      batch_size=128, teacher=None, distill_options=None,
                      quality="elbo", iwae_samples=500, litert=True,
                      latency_runs=300, calibration_samples=500, seed=0,
                      extra=None):
    """Train one candidate and measure its quality and costs: a search trial.

    Trains the compiled `model` (or distils it from `teacher`), writes
    `model.keras`, `model_int8.tflite` (with `litert=True`) and
    `record.json` to `directory`, and returns the record.

    Args:
        model: compiled `keras_vae.VAE`.
        x_train: array. Training data.
        x_test: array. Data the quality is measured on.
        directory: str. Folder of this candidate's files.
        epochs: int > 0. Training epochs.
        batch_size: int > 0. Training batch size.
        teacher: `keras_vae.VAE` or None. Distil from it
            (`keras_vae.compression.distill`); a candidate with another
            latent size uses `output_code="reconstruction"`.
        distill_options: dict or None. More keyword arguments of `distill`.
        quality: str. `"elbo"`, or `"iwae"` to add `iwae_nll`.
        iwae_samples: int > 0. Samples of the IWAE bound.
        litert: bool. Export to full int8 and time it (`int8_costs`).
        latency_runs: int > 0. Timed batch-1 calls.
        calibration_samples: int > 0. Training images calibrating int8.
        seed: int. Seed of the distillation noise.
        extra: dict or None. More fields of the record.

    Returns:
        dict: `architecture`, `distilled`, `epochs`, `train_seconds`,
        `params`, `learning_rate`, `negative_elbo` (one-sample test ELBO,
        fixed noise),
        `model_path`, optionally `iwae_nll`, and with `litert` the keys of
        `int8_costs`.
    """
    started = time.perf_counter()
    if teacher is None:
        model.fit(x_train, epochs=epochs, batch_size=batch_size, verbose=0)
    else:
        from keras_vae.compression.distillation import distill

        options = dict(distill_options or {})
        if model.latent_dim != teacher.latent_dim:
            options["output_code"] = "reconstruction"
        distill(teacher, model, x_train, epochs=epochs,
                batch_size=batch_size, seed=seed, verbose=0, **options)
    record = dict(extra or {})
    record.update({
        "architecture": describe(model),
        "distilled": teacher is not None,
        "epochs": int(epochs),
        "train_seconds": time.perf_counter() - started,
        "params": int(model.count_params()),
        "learning_rate": _learning_rate(model),
        "negative_elbo": -metrics.elbo(model, x_test, seed=0),
    })
    if quality == "iwae":
        record["iwae_nll"] = metrics.iwae_nll(
            model, x_test, num_samples=iwae_samples)["nll"]
    record["model_path"] = files.save_model(
        model, os.path.join(directory, "model.keras"), overwrite=True)
    if litert:
        record.update(int8_costs(model, directory,
                                 x_train[:calibration_samples],
                                 latency_runs=latency_runs))
    files.write_json(os.path.join(directory, _RECORD), record,
                     overwrite=True)
    return record


def _learning_rate(model):
    """The optimizer's learning rate as a float, or None (no optimizer)."""
    optimizer = getattr(model, "optimizer", None)
    rate = getattr(optimizer, "learning_rate", None)
    try:
        value = float(keras.ops.convert_to_numpy(rate))
    except (TypeError, ValueError):
        return None
    # The variable is float32: 1e-3 reads back as 0.0010000000474974513.
    return float(f"{value:.7g}")


class SearchResult:
    """Every finished trial of a search, and its Pareto front.

    Attributes:
        trials: list of dicts, one per finished trial (see `VAETuner`):
            `trial_id`, `architecture`, `hyperparameters`, `params`,
            `negative_elbo` (and `iwae_nll`), `tflite_bytes`, `latency_us`,
            `latency_wall_us`, `train_seconds`, `model_path`,
            `tflite_path`.
        objectives: tuple of str. Keys of the Pareto front.
        front: list of dicts. The non-dominated trials.
        directory: str. The KerasTuner project folder.
    """

    def __init__(self, trials, objectives, directory):
        self.trials = list(trials)
        self.objectives = tuple(objectives)
        self.front = pareto_front(self.trials, self.objectives)
        self.directory = directory

    def load_model(self, trial_id):
        """The saved `keras_vae.VAE` of one trial."""
        for record in self.trials:
            if record["trial_id"] == trial_id:
                return files.load_model(record["model_path"])
        raise ValueError(
            f"No finished trial {trial_id!r}; finished trials are "
            f"{[r['trial_id'] for r in self.trials]}. Received: "
            f"trial_id={trial_id!r}"
        )

    def to_dict(self):
        """JSON-ready summary: trials, front and objectives."""
        return {"objectives": list(self.objectives),
                "directory": self.directory,
                "trials": self.trials,
                "front": [r["trial_id"] for r in self.front]}


def _read_records(tuner):
    records = []
    for trial in tuner.oracle.trials.values():
        path = os.path.join(tuner.get_trial_dir(trial.trial_id), _RECORD)
        if os.path.exists(path):
            with open(path) as handle:
                records.append(json.load(handle))
    return sorted(records, key=lambda r: r["trial_id"])


def search(
    x_train,
    x_test,
    hypermodel=None,
    max_trials=30,
    max_minutes=30.0,
    epochs=30,
    batch_size=128,
    directory="runs/search",
    project_name="vae_search",
    overwrite=False,
    teacher=None,
    distill_options=None,
    quality="elbo",
    iwae_samples=500,
    litert=True,
    latency_runs=300,
    calibration_samples=500,
    seed=0,
    verbose=1,
):
    """Search architectures; return every trial and the Pareto front.

    A random search (KerasTuner's `RandomSearch` oracle, seeded) over
    `hypermodel`, at most `max_trials` trials in all and no new trial after
    `max_minutes` of this call. Trials already finished in
    `directory/project_name` count and are not run again, so calling
    `search` again with the same folder resumes (`overwrite=True` starts
    over). Each trial seeds the global random state
    (`keras.utils.set_random_seed(seed + trial number)`), so a trial
    trains the same way whenever it runs.

    Args:
        x_train: array `(n, *input_shape)`. Training data.
        x_test: array `(m, *input_shape)`. Data the quality is measured on.
        hypermodel: `VAEHyperModel` or None (the default space of MLP VAEs
            for this data shape).
        max_trials: int > 0. Trial budget (finished trials included).
        max_minutes: float or None. Time budget of this call.
        epochs: int > 0. Training epochs of every candidate.
        batch_size: int > 0. Training batch size.
        directory: str. Folder of KerasTuner projects.
        project_name: str. This search's subfolder.
        overwrite: bool. Delete an existing project and start over.
        teacher: `keras_vae.VAE` or None. Distil every candidate from this
            teacher (`keras_vae.compression.distill`) instead of training
            it alone; a candidate with another latent size is distilled
            with `output_code="reconstruction"`.
        distill_options: dict or None. Keyword arguments of `distill`.
        quality: str. `"elbo"` (test negative ELBO, one sample) or `"iwae"`
            (IWAE bound with `iwae_samples` samples; slower). The
            oracle's objective, minimised.
        iwae_samples: int > 0. Samples of the IWAE bound.
        litert: bool. Export every candidate to full-int8 `.tflite` and
            time it (on another backend than TensorFlow a TensorFlow child
            process does it).
        latency_runs: int > 0. Timed batch-1 calls per candidate.
        calibration_samples: int > 0. Training images calibrating int8.
        seed: int. Seed of the oracle and of each trial's training.
        verbose: int. KerasTuner's progress display (0 for none).

    Returns:
        `SearchResult`.

    Example:

    >>> import keras_vae  # doctest: +SKIP
    >>> (x_train, _), (x_test, _) = keras_vae.datasets.load("digits")
    >>> result = keras_vae.search.search(x_train, x_test, max_trials=2,
    ...                                  epochs=1, directory="/tmp/search")
    >>> len(result.trials)
    2
    """
    kt = _import_keras_tuner()
    x_train = _validation.as_float_array(x_train, "x_train")
    x_test = _validation.as_float_array(x_test, "x_test", x_train.shape[1:])
    max_trials = _validation.check_positive_int(max_trials, "max_trials")
    epochs = _validation.check_positive_int(epochs, "epochs")
    if max_minutes is not None:
        max_minutes = _validation.check_non_negative(max_minutes,
                                                     "max_minutes")
    if quality not in QUALITIES:
        raise ValueError(
            f"Expected `quality` to be one of {sorted(QUALITIES)}. "
            f"Received: quality={quality!r}"
        )
    if hypermodel is None:
        hypermodel = VAEHyperModel(x_train.shape[1:], seed=seed)
    objective = QUALITIES[quality]
    oracle = kt.oracles.RandomSearchOracle(
        objective=kt.Objective(objective, direction="min"),
        max_trials=max_trials, seed=seed)
    tuner = VAETuner(oracle, hypermodel, max_minutes=max_minutes,
                     directory=directory, project_name=project_name,
                     overwrite=overwrite)
    tuner.search(
        x_train, x_test, epochs=epochs, batch_size=batch_size,
        teacher=teacher, distill_options=distill_options, quality=quality,
        iwae_samples=iwae_samples, litert=litert, latency_runs=latency_runs,
        calibration_samples=calibration_samples, seed=seed, verbose=verbose)
    records = _read_records(tuner)
    if not records:
        failed = [t.message for t in tuner.oracle.trials.values()
                  if getattr(t, "message", None)]
        raise RuntimeError(
            "No trial of the search finished. "
            + (f"The last trial failed with:\n{failed[-1]}" if failed else
               "Raise `max_minutes` or `max_trials`.")
        )
    costs = ("params", "latency_us") if litert else ("params",)
    return SearchResult(records, (objective, *costs),
                        os.path.join(directory, project_name))




# ------------------------------------------------------------------ the job
#: The files `search_and_report` writes into its output folder, by key.
RUN_FILES = {"pareto": "pareto.png", "report": "report.json"}


def search_and_report(
    dataset="mnist5k",
    kinds=("mlp",),
    max_trials=30,
    max_minutes=30.0,
    epochs=30,
    batch_size=128,
    learning_rates=(1e-3,),
    teacher=None,
    quality="elbo",
    compare_default=True,
    seed=0,
    output_dir="runs/search",
    overwrite=False,
    data_dir=None,
    verbose=1,
):
    """Run `search` on a named data set; write the Pareto plot and a report.

    The KerasTuner project lives in `output_dir/tuner`: running the same
    command again resumes it (finished trials are kept) and rewrites the
    report and plot; `overwrite=True` starts the search over. With
    `compare_default`, the default `mlp_vae` (784-512-256-16 on MNIST) is
    trained and measured the same way once (`output_dir/default`), drawn
    on the plot, and the trials that dominate it (no worse test negative
    ELBO, fewer parameters and lower int8 latency) are listed.

    Args:
        dataset: str. A `keras_vae.datasets.load` name.
        kinds: tuple of str. Builders to search (`"mlp"`, `"conv"`).
        max_trials: int > 0. Trial budget.
        max_minutes: float or None. Time budget of this call.
        epochs: int > 0. Training epochs of every candidate.
        batch_size: int > 0. Batch size.
        learning_rates: tuple of floats > 0. Adam learning rates to try
            (a hyperparameter when there are several).
        teacher: str or None. A teacher `.keras` file: distil every
            candidate from it.
        quality: str. `"elbo"` or `"iwae"` (see `search`).
        compare_default: bool. Measure the default `mlp_vae` too.
        seed: int. Seed of the search and the trainings.
        output_dir: str. Folder of the run.
        overwrite: bool. Start the search over.
        data_dir: str or None. tensorflow-datasets data directory.
        verbose: int. KerasTuner's display.

    Returns:
        dict. The report.

    Example:

    >>> from keras_vae.search import search_and_report
    >>> # report = search_and_report("digits", max_trials=2, epochs=2)
    """
    from keras_vae import datasets, plotting

    paths = {key: os.path.join(output_dir, name)
             for key, name in RUN_FILES.items()}
    with files.claim_folder(output_dir):
        (x_train, _), (x_test, _) = datasets.load(dataset, data_dir=data_dir)
        if isinstance(teacher, (str, os.PathLike)):
            teacher = files.load_model(teacher, compile=False)
        hypermodel = VAEHyperModel(x_train.shape[1:], kinds=tuple(kinds),
                                   learning_rate=tuple(learning_rates),
                                   seed=seed)
        result = search(
            x_train, x_test, hypermodel=hypermodel, max_trials=max_trials,
            max_minutes=max_minutes, epochs=epochs, batch_size=batch_size,
            directory=output_dir, project_name="tuner", overwrite=overwrite,
            teacher=teacher, quality=quality, seed=seed, verbose=verbose)
        report = {"dataset": dataset, "backend": keras.backend.backend(),
                  "epochs": epochs, **result.to_dict()}
        reference = None
        if compare_default:
            reference = _default_record(x_train, x_test, epochs, batch_size,
                                        teacher, quality, seed,
                                        os.path.join(output_dir, "default"),
                                        overwrite)
            report["default"] = reference
            report["dominating_default"] = [
                r["trial_id"] for r in dominating(result.trials, reference)]
        report["files"] = {
            "pareto": plotting.pareto(
                result.trials, paths["pareto"],
                quality=QUALITIES[quality],
                costs=("params", "latency_us"), reference=reference)}
        report["files"]["report"] = files.write_json(
            paths["report"], report, overwrite=True)
        return report


def _default_record(x_train, x_test, epochs, batch_size, teacher, quality,
                    seed, directory, overwrite):
    """The default `mlp_vae`, measured like a trial (cached in `directory`)."""
    path = os.path.join(directory, _RECORD)
    if os.path.exists(path) and not overwrite:
        with open(path) as handle:
            record = json.load(handle)
        if record.get("epochs") == epochs:
            return record
    keras.utils.set_random_seed(seed)
    model = models.mlp_vae(x_train.shape[1:], seed=seed)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    return train_and_measure(model, x_train, x_test, directory,
                             epochs=epochs, batch_size=batch_size,
                             teacher=teacher, quality=quality, seed=seed,
                             extra={"trial_id": "default"})


__all__ = [
    "COSTS",
    "QUALITIES",
    "SearchResult",
    "VAEHyperModel",
    "VAETuner",
    "describe",
    "dominating",
    "int8_costs",
    "litert_latency",
    "pareto_front",
    "search",
    "search_and_report",
    "train_and_measure",
]
