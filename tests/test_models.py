import numpy as np
import pytest
from model_checks import check_model

import keras_vae


@pytest.mark.parametrize(
    "input_shape", [(28, 28, 1), (32, 32, 3), (8, 8, 1), (27, 13, 2), (5, 5, 1)]
)
@pytest.mark.parametrize("decoder_block", ["transpose", "upsample"])
def test_conv_vae_reconstructs_any_image_size(input_shape, decoder_block):
    model = keras_vae.models.conv_vae(
        input_shape, latent_dim=3, filters=(4, 8), decoder_block=decoder_block
    )
    assert tuple(model.decoder.output.shape[1:]) == input_shape
    x = np.random.default_rng(0).uniform(size=(2, *input_shape)).astype("float32")
    assert np.asarray(model(x)).shape == (2, *input_shape)


@pytest.mark.parametrize("input_shape", [(28, 28, 1), (30,), (4, 5)])
def test_mlp_vae_reconstructs_any_shape(input_shape):
    model = keras_vae.models.mlp_vae(input_shape, latent_dim=2, hidden_units=(8,))
    x = np.random.default_rng(0).uniform(size=(3, *input_shape)).astype("float32")
    assert np.asarray(model.reconstruct(x)).shape == (3, *input_shape)
    assert [layer.units for layer in model.decoder.layers if hasattr(layer, "units")] == [8, int(np.prod(input_shape))]


@pytest.mark.parametrize(
    "builder,kwargs",
    [
        (keras_vae.models.mlp_vae, {"hidden_units": (16,)}),
        (keras_vae.models.conv_vae, {"filters": (4, 8)}),
        (keras_vae.models.conv_vae, {"filters": (4,), "decoder_block": "upsample",
                                     "likelihood": "gaussian_global"}),
    ],
)
def test_builders_pass_shared_checks(builder, kwargs, tmp_path, rng):
    x = rng.uniform(size=(8, 8, 8, 1)).astype("float32")
    check_model(lambda: builder((8, 8, 1), latent_dim=2, **kwargs), x, str(tmp_path))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"input_shape": (28, 28)}, "input_shape"),
        ({"input_shape": (8, 8, 1), "latent_dim": 0}, "latent_dim=0"),
        ({"input_shape": (8, 8, 1), "decoder_block": "pixelshuffle"}, "decoder_block"),
    ],
)
def test_conv_vae_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        keras_vae.models.conv_vae(**kwargs)


@pytest.mark.parametrize(
    "builder,kwargs,match",
    [
        (keras_vae.models.conv_vae, {"input_shape": (8.9, 8, 1)}, "input_shape"),
        (keras_vae.models.mlp_vae, {"input_shape": (8.0, 8)}, "input_shape"),
        (keras_vae.models.mlp_vae, {"input_shape": (8, 8), "hidden_units": (2.5,)},
         "hidden_units"),
        (keras_vae.models.mlp_vae, {"input_shape": (8, 8), "latent_dim": 2.0},
         "latent_dim"),
        (keras_vae.models.conv1d_vae, {"input_shape": (16, 1), "filters": (4, 8.5)},
         "filters"),
        (keras_vae.models.mlp_cvae, {"input_shape": (True, 8), "num_classes": 2},
         "input_shape"),
    ],
)
def test_builders_refuse_non_integer_sizes_instead_of_truncating(builder, kwargs,
                                                               match):
    with pytest.raises(ValueError, match=match):
        builder(**kwargs)


def test_builders_take_numpy_integers_as_integers():
    model = keras_vae.models.conv_vae(
        tuple(np.int64(d) for d in (8, 8, 1)), latent_dim=np.int64(4),
        filters=(np.int32(4),))
    assert model.latent_dim == 4 and model.input_spec_shape == (8, 8, 1)
    model = keras_vae.models.mlp_cvae(np.array([8, 8]), np.int64(3),
                                      latent_dim=np.int32(2),
                                      hidden_units=np.array([8]))
    assert model.latent_dim == 2 and model.num_classes == 3
