"""HarDNet: weight and output parity with PaddleSeg 2.8.0, registration, shapes, training, pretrained loading."""
import json
import os
import subprocess
import sys

import numpy as np
import paddle
import paddle.nn.functional as F
import paddleseg
import pytest
import yaml
from paddleseg.models import hardnet as reference_hardnet

import paddle_models  # noqa: F401  (registers our components)
from paddle_models.errors import UserError
from paddle_models.models.hardnet import HarDNet, harmonic_links, harmonic_width
from helpers import TINY_HARDNET, assert_fits_any_size

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Small widths (fast); a 16-layer block exercises links reaching back 16 layers (to the block input).
SMALL = dict(stem_channels=(8, 8, 8, 16), ch_list=(16, 24, 32), gr=(4, 6, 8), n_layers=(2, 16, 3))


def _randomized_state(model, seed):
    """The model's state dict with random BN statistics and affine terms (fresh BN layers are near-identity,
    which would hide mistakes in the wiring of the running statistics)."""
    rng = np.random.RandomState(seed)
    state = {}
    for key, value in model.state_dict().items():
        if key.endswith('_mean') or key.endswith('bias'):
            value = rng.uniform(-0.1, 0.1, value.shape).astype('float32')
        elif key.endswith('_variance') or key.endswith('_batch_norm.weight'):
            value = rng.uniform(0.5, 1.5, value.shape).astype('float32')
        else:
            value = value.numpy()
        state[key] = paddle.to_tensor(value)
    return state


@pytest.mark.parametrize('kwargs, size', [
    ({}, (64, 96)),
    (dict(SMALL, align_corners=True), (70, 90)),
    (dict(SMALL, grmul=1.6, in_channels=1), (45, 77)),
])
def test_parity_with_paddleseg(kwargs, size):
    paddle.seed(0)
    reference = paddleseg.models.HarDNet(num_classes=5, **kwargs)
    paddle.seed(1)
    ours = HarDNet(num_classes=5, **kwargs)

    state = _randomized_state(reference, seed=2)
    reference.set_state_dict(state)
    own_state = ours.state_dict()
    assert list(own_state) == list(state)  # same names, same order
    assert {k: list(v.shape) for k, v in own_state.items()} == {k: list(v.shape) for k, v in state.items()}

    reference.eval()
    ours.eval()
    x = paddle.to_tensor(np.random.RandomState(3).randn(1, kwargs.get('in_channels', 3), *size).astype('float32'))
    expected = reference(x)
    assert len(expected) == 1
    expected = expected[0].numpy()
    # Before loading, the independently initialised model must disagree (else the comparison proves nothing).
    assert np.abs(ours(x)[0].numpy() - expected).max() > 1e-3

    missing, unexpected = ours.set_state_dict(state)
    assert not missing and not unexpected
    outputs = ours(x)
    assert len(outputs) == 1
    assert outputs[0].shape == [1, 5, *size]
    assert expected.std() > 0.1
    np.testing.assert_allclose(outputs[0].numpy(), expected, rtol=1e-5, atol=1e-4)  # the CPU resize: matrix products (float rounding)


def test_harmonic_links_match_reference():
    assert harmonic_links(1) == [0]
    assert harmonic_links(6) == [4, 5]
    assert harmonic_links(8) == [0, 4, 6, 7]
    for layer in range(1, 21):  # the reference recomputes recursively: cost grows exponentially with the layer
        for growth_rate in (4, 10, 32):
            for grmul in (1.6, 1.7, 2.0):
                out_channels, in_channels, links = reference_hardnet.get_link(layer, 48, growth_rate, grmul)
                assert harmonic_links(layer) == links
                assert harmonic_width(growth_rate, grmul, len(links)) == out_channels


def test_registered_in_manager_without_warning():
    code = (
        "import json, warnings, zlib\n"
        "import paddle, paddleseg\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    import paddle_models\n"
        "from paddleseg.cvlibs import manager\n"
        "from paddle_models.models.hardnet import HarDNet\n"
        "print(json.dumps({'ours': manager.MODELS['HarDNet'] is HarDNet,\n"
        "                  'reference_kept': paddleseg.models.HarDNet is not HarDNet,\n"
        "                  'warnings': [str(w.message) for w in caught]}))\n")
    env = dict(os.environ, PYTHONPATH=REPO)
    result = subprocess.run([sys.executable, '-c', code], cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report == {'ours': True, 'reference_kept': True, 'warnings': []}
    assert 'exists already' not in result.stderr


# (7, 11): the smallest size TINY_HARDNET (3 levels) accepts, 2 ** 3 - 1, as the HarDNet docstring states.
@pytest.mark.parametrize('shape', [(2, 3, 70, 90), (1, 3, 31, 53), (1, 3, 64, 64), (1, 3, 7, 11)])
def test_any_input_size_gives_aligned_per_sample_outputs(shape):
    paddle.seed(0)
    model = HarDNet(num_classes=4, **TINY_HARDNET)
    model.train()
    outputs = model(paddle.randn(shape))
    assert isinstance(outputs, list) and len(outputs) == 1
    assert outputs[0].shape == [shape[0], 4, shape[2], shape[3]]
    assert_fits_any_size(model, shape, 4)


def test_the_alignment_check_catches_a_flipped_output():
    class Flipped(paddle.nn.Layer):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, x):
            return [paddle.flip(self.model(x)[0], axis=[2, 3])]

    paddle.seed(0)
    with pytest.raises(AssertionError, match=r'\(0, 0\)'):
        assert_fits_any_size(Flipped(HarDNet(num_classes=4, **TINY_HARDNET)), (1, 3, 31, 53), 4)


def test_sgd_steps_reduce_loss():
    paddle.seed(0)
    model = HarDNet(num_classes=3, **TINY_HARDNET)
    rng = np.random.RandomState(0)
    labels = rng.randint(0, 3, (4, 4, 4)).repeat(8, axis=1).repeat(8, axis=2)  # 8x8-pixel blocks of classes
    images = np.eye(3)[labels].transpose(0, 3, 1, 2) * 2 + rng.randn(4, 3, 32, 32) * 0.5  # class colour + noise
    x, y = paddle.to_tensor(images.astype('float32')), paddle.to_tensor(labels.astype('int64'))
    optimizer = paddle.optimizer.Momentum(learning_rate=0.1, momentum=0.9, parameters=model.parameters())
    model.train()
    losses = []
    for step in range(15):
        loss = F.cross_entropy(model(x)[0], y, axis=1)
        loss.backward()
        if step == 0:  # every trainable parameter takes part in the forward pass
            dead = [p.name for p in model.parameters()
                    if not p.stop_gradient and (p.grad is None or float(p.grad.abs().max()) == 0.0)]
            assert not dead
        optimizer.step()
        optimizer.clear_grad()
        losses.append(float(loss))
    assert np.isfinite(losses).all()
    assert losses[-1] < 0.5 * losses[0], losses


def test_pretrained_loads_local_file(tmp_path):
    paddle.seed(0)
    source = HarDNet(num_classes=3, **TINY_HARDNET)
    source.set_state_dict(_randomized_state(source, seed=4))
    path = str(tmp_path / 'model.pdparams')
    paddle.save(source.state_dict(), path)

    paddle.seed(5)
    loaded = HarDNet(num_classes=3, pretrained=path, **TINY_HARDNET)
    source.eval()
    loaded.eval()
    x = paddle.randn([1, 3, 40, 48])
    np.testing.assert_array_equal(loaded(x)[0].numpy(), source(x)[0].numpy())


def test_pretrained_errors(tmp_path):
    paddle.seed(0)
    missing = str(tmp_path / 'nope.pdparams')
    with pytest.raises(UserError) as err:
        HarDNet(num_classes=3, pretrained=missing, **TINY_HARDNET)
    assert str(err.value) == f"HarDNet: pretrained weights not found: {missing}"

    url = 'ftp://example.com/hardnet.pdparams'  # http(s) URLs download: tests/test_weights_download.py
    with pytest.raises(UserError) as err:
        HarDNet(num_classes=3, pretrained=url, **TINY_HARDNET)
    assert str(err.value) == f"pretrained must be a local .pdparams file or an http(s) URL: {url}"

    garbage = tmp_path / 'garbage.pdparams'
    garbage.write_bytes(b'not a pickle\n' * 3)
    with pytest.raises(UserError) as err:
        HarDNet(num_classes=3, pretrained=str(garbage), **TINY_HARDNET)
    assert str(err.value).startswith(f"HarDNet: cannot read pretrained weights {garbage}: ")
    assert '\n' not in str(err.value)

    # another class count is fine-tuning: the classifier keeps its initial weights, the rest must fit exactly
    other_classes = str(tmp_path / 'classes5.pdparams')
    five_classes = HarDNet(num_classes=5, **TINY_HARDNET)
    paddle.save(five_classes.state_dict(), other_classes)
    three = HarDNet(num_classes=3, pretrained=other_classes, **TINY_HARDNET)
    key = 'decoder.conv1x1_up.0._conv.weight'
    np.testing.assert_array_equal(three.state_dict()[key].numpy(), five_classes.state_dict()[key].numpy())
    other_width = str(tmp_path / 'wider.pdparams')
    paddle.save(HarDNet(num_classes=3, **dict(TINY_HARDNET, stem_channels=(8, 8, 8, 12))).state_dict(), other_width)
    with pytest.raises(UserError) as err:
        HarDNet(num_classes=3, pretrained=other_width, **TINY_HARDNET)
    assert str(err.value).startswith(f"HarDNet: pretrained weights {other_width} does not fit the model: ")
    assert "cls_head" not in str(err.value) and "in the file but" in str(err.value)

    state = HarDNet(num_classes=3, **TINY_HARDNET).state_dict()
    keys = list(state)
    extra = str(tmp_path / 'extra.pdparams')
    paddle.save(dict(state, **{'aux.weight': paddle.zeros([2]), 'aux.bias': paddle.zeros([2])}), extra)
    with pytest.raises(UserError) as err:
        HarDNet(num_classes=3, pretrained=extra, **TINY_HARDNET)
    assert str(err.value) == (f"HarDNet: pretrained weights {extra} does not fit the model: 2 keys not in the model "
                              "(aux.weight, aux.bias)")

    fewer = str(tmp_path / 'fewer.pdparams')
    paddle.save({k: v for k, v in state.items() if k not in keys[:4]}, fewer)
    with pytest.raises(UserError) as err:
        HarDNet(num_classes=3, pretrained=fewer, **TINY_HARDNET)
    assert str(err.value) == (f"HarDNet: pretrained weights {fewer} does not fit the model: 4 keys missing from the "
                              f"file ({', '.join(keys[:3])}, ...)")


@pytest.mark.parametrize('kwargs, message', [
    (dict(gr=(4, 4)), "HarDNet: gr must be a list of 3 integers >= 1, got [4, 4]"),
    (dict(stem_channels=(8, 8, 8)), "HarDNet: stem_channels must be a list of 4 integers >= 1, got [8, 8, 8]"),
    (dict(n_layers=(2, 0, 4)), "HarDNet: n_layers must be a list of 3 integers >= 1, got [2, 0, 4]"),
    (dict(ch_list=[]), "HarDNet: ch_list must be a list of integers >= 1, got []"),
    (dict(grmul='1.7'), "HarDNet: grmul must be a number > 0, got '1.7'"),
    (dict(grmul=0), "HarDNet: grmul must be a number > 0, got 0"),
])
def test_bad_arguments(kwargs, message):
    with pytest.raises(UserError) as err:
        HarDNet(num_classes=3, **dict(TINY_HARDNET, **kwargs))
    assert str(err.value) == message


@pytest.mark.parametrize('config, num_classes', [('hardnet.yml', 11), ('quickstart.yml', 5)])
def test_config_model_section_builds(config, num_classes):
    with open(os.path.join(REPO, 'configs', config)) as f:
        cfg = yaml.safe_load(f)
    args = dict(cfg['model'])
    model_class = paddleseg.cvlibs.manager.MODELS[args.pop('type')]
    assert model_class is HarDNet
    assert args['num_classes'] == num_classes
    model = model_class(**args)
    model.eval()
    size = 64 if config == 'quickstart.yml' else 96
    assert model(paddle.randn([1, 3, size, size]))[0].shape == [1, num_classes, size, size]
