"""Helpers shared by several test modules: the one tiny model definition, config writers, weight randomisers, a
training loop, export-and-infer checks and the command-line runners. Test modules import from here (or from
conftest for fixtures), never from one another (tests/test_tests_layout.py checks that)."""
import importlib.util
import os
import subprocess
import sys

import numpy as np
import paddle
import paddle.nn.functional as F
import yaml

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INFER = os.path.join(REPO, 'deploy', 'python', 'infer.py')

# ------------------------------------------------------------------------------------------------- tiny models

# The tiny HarDNet (three levels, ~20 k parameters): small enough to build, train a few steps and export in seconds.
# Every test that needs "some small HarDNet" uses this one; a test needing other widths derives them from it with a
# named override and says why.
TINY_HARDNET = dict(stem_channels=(8, 8, 8, 8), ch_list=(8, 12, 16), gr=(4, 4, 6), n_layers=(2, 2, 4))
# The val transforms that tiny exports write to deploy.yaml (and that the deploy runner then applies)
TINY_TRANSFORMS = [{'type': 'Normalize', 'mean': [0.5, 0.5, 0.5], 'std': [0.5, 0.5, 0.5]}]
# configs/quickstart.yml's HarDNet with CamVid's 11 classes: wide enough that INT8 quantisation and the benchmark
# tool measure a model that has learned something in 60 iterations (the tiny one is too narrow to say anything)
SMALL_HARDNET = {'type': 'HarDNet', 'num_classes': 11, 'stem_channels': [8, 8, 16, 16], 'ch_list': [24, 32, 48, 64],
                 'gr': [6, 8, 10, 12], 'n_layers': [2, 2, 4, 4]}


def hardnet_section(num_classes=5, **widths):
    """The config ``model:`` section of the tiny HarDNet (YAML-safe lists) with ``num_classes``; ``widths`` override
    entries of TINY_HARDNET."""
    return dict(type='HarDNet', num_classes=num_classes,
                **{k: list(v) for k, v in dict(TINY_HARDNET, **widths).items()})


def tiny_hardnet(num_classes=5, seed=None):
    """The tiny HarDNet as a layer, its weights drawn after ``paddle.seed(seed)`` when a seed is given."""
    from paddle_models.models.hardnet import HarDNet

    if seed is not None:
        paddle.seed(seed)
    return HarDNet(num_classes=num_classes, **TINY_HARDNET)


def tiny_van(seed=0):
    """A VAN backbone of four one-block stages, widths 16..48 (random weights after ``paddle.seed(seed)``)."""
    from paddle_models.backbones.van import VAN

    paddle.seed(seed)
    return VAN(embed_dims=[16, 24, 32, 48], depths=[1, 1, 1, 1], mlp_ratios=[2, 2, 2, 2], drop_path_rate=0.0)


def tiny_config(tmp_path, train_samples=64, val_samples=16, iters=20, batch_size=4, lr=0.05, random_aug=True,
                name='tiny.yml', model=None, image_size=64):
    """Write a full training config (SyntheticShapes train/val sets, SGD, polynomial decay, cross entropy) of the
    tiny HarDNet with 5 classes (or of the ``model`` section given) to ``tmp_path/name``; returns its path."""
    transforms = [{'type': 'RandomHorizontalFlip'}] if random_aug else []
    cfg = {
        'batch_size': batch_size,
        'iters': iters,
        'train_dataset': {'type': 'SyntheticShapes', 'mode': 'train', 'num_samples': train_samples,
                          'image_size': image_size, 'transforms': transforms + [{'type': 'Normalize'}]},
        'val_dataset': {'type': 'SyntheticShapes', 'mode': 'val', 'num_samples': val_samples,
                        'image_size': image_size, 'transforms': [{'type': 'Normalize'}]},
        'model': dict(model or hardnet_section()),
        'optimizer': {'type': 'SGD', 'momentum': 0.9, 'weight_decay': 4e-5},
        'lr_scheduler': {'type': 'PolynomialDecay', 'learning_rate': lr, 'end_lr': 0.0, 'power': 0.9},
        'loss': {'types': [{'type': 'CrossEntropyLoss'}], 'coef': [1]},
    }
    path = tmp_path / name
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def load_params(path):
    """A ``.pdparams`` file as {name: numpy array}."""
    return {k: v.numpy() for k, v in paddle.load(path).items()}


class NaNAfter(paddle.nn.Layer):
    """A 1x1-conv segmenter whose training output turns NaN from the ``nan_from``-th call on (for the NaN-loss
    handling of the training loop)."""

    def __init__(self, num_classes, nan_from):
        super().__init__()
        self.conv = paddle.nn.Conv2D(3, num_classes, 1)
        self.calls = 0
        self.nan_from = nan_from

    def forward(self, x):
        self.calls += 1
        out = self.conv(x)
        if self.training and self.calls >= self.nan_from:
            out = out * float('nan')
        return [out]


# ------------------------------------------------------------------------------------------- weights and counts

def count_params(model):
    """Trainable parameters (BN statistics are Paddle parameters too, but not trainable: buffers in PyTorch's and
    timm's counts)."""
    return sum(int(np.prod(p.shape)) for p in model.parameters() if not p.stop_gradient)


def randomize_norms(model, seed):
    """Random BN statistics, affine terms and biases set into ``model`` (convs keep their init): fresh BN layers are
    near-identity and would hide wiring mistakes. Returns the state set."""
    rng = np.random.RandomState(seed)
    state = {}
    for key, value in model.state_dict().items():
        if key.endswith('_mean') or key.endswith('bias'):
            value = rng.uniform(-0.2, 0.2, value.shape)
        elif key.endswith('_variance') or (key.endswith('weight') and len(value.shape) == 1):
            value = rng.uniform(0.5, 1.5, value.shape)
        else:
            value = value.numpy()
        state[key] = paddle.to_tensor(value.astype('float32'))
    model.set_state_dict(state)
    return state


def randomized(state, seed=0):
    """A new state of random weights of moderate scale (conv/linear ~ N(0, 1/fan_in), BN statistics and affine
    terms, biases): PaddleSeg's initial convs (std 0.001) would make every output ~0 and hide mistakes."""
    rng = np.random.RandomState(seed)
    out = {}
    for key, value in state.items():
        shape = list(value.shape)
        if key.endswith('_variance'):
            array = rng.uniform(0.5, 1.5, shape)
        elif key.endswith('_mean') or key.endswith('bias'):
            array = rng.uniform(-0.2, 0.2, shape)
        elif len(shape) == 1:
            array = rng.uniform(0.5, 1.5, shape)
        else:
            fan_in = shape[0] if len(shape) == 2 else int(np.prod(shape[1:]))  # Linear weights are [in, out]
            array = rng.normal(0.0, fan_in ** -0.5, shape)
        out[key] = paddle.to_tensor(array.astype('float32'))
    return out


def tamed(state, factor=0.3):
    """``randomized`` weights with the affine terms of every residual branch's last BN and of every fusion path
    scaled by ``factor``: the wide networks then keep activations of order 1 instead of growing ~3x per module
    (with ``randomized`` alone HRNet-W48's last maps reach ~1e4, and PSA's softmax over such logits turns float
    rounding into 25% differences)."""
    out = {}
    for key, value in state.items():
        affine = key.endswith('.bias') or (key.endswith('.weight') and len(value.shape) == 1)
        if affine and ('conv2._batch_norm' in key or 'fuse_func' in key):
            value = value * factor
        out[key] = value
    return out


def perturb(state, seed):
    """Every tensor of ``state`` moved in place by U(-0.1, 0.1), variances drawn from U(0.5, 1.5): the init (zero
    biases, unit norms, BN statistics 0/1) would hide mapping mistakes. Returns ``state``."""
    rng = np.random.RandomState(seed)
    for key, value in state.items():
        array = value.numpy()
        if key.endswith('_variance'):
            array = rng.uniform(0.5, 1.5, array.shape)
        else:
            array = array + rng.uniform(-0.1, 0.1, array.shape)
        value.set_value(paddle.to_tensor(array.astype('float32')))
    return state


def strict_load(ours, reference_state):
    """Load ``reference_state`` into ``ours`` after asserting both have the same keys and shapes."""
    own = ours.state_dict()
    assert set(own) == set(reference_state)
    for key, value in own.items():
        assert list(value.shape) == list(reference_state[key].shape), key
    ours.set_state_dict(reference_state)


# ----------------------------------------------------------------------------------------- training and export

def train_steps(model, steps=4, size=(64, 64), num_classes=4, learning_rate=0.02):
    """SGD steps on one fixed random batch; returns the losses (cross entropy, auxiliary outputs weighted 0.4)."""
    paddle.seed(0)
    rng = np.random.RandomState(0)
    x = paddle.to_tensor(rng.randn(2, 3, *size).astype('float32'))
    label = paddle.to_tensor(rng.randint(0, num_classes, (2, *size)).astype('int64'))
    optimizer = paddle.optimizer.SGD(learning_rate=learning_rate, parameters=model.parameters())
    model.train()
    losses = []
    for _ in range(steps):
        logits = model(x)
        assert all(logit.shape == [2, num_classes, *size] for logit in logits)
        loss = sum(F.cross_entropy(paddle.transpose(logit, [0, 2, 3, 1]), label.unsqueeze(-1)).mean() *
                   (1.0 if i == 0 else 0.4) for i, logit in enumerate(logits))
        loss.backward()
        optimizer.step()
        optimizer.clear_grad()
        losses.append(float(loss))
    return losses


def export_and_infer(model, tmp_path, size=(64, 96), folder='export'):
    """Export (free input size) into ``tmp_path/folder``, run deploy/python/infer.py with oneDNN on a random image of
    ``size`` (H, W) and compare its PNG with the dynamic graph's argmax (at least 99.5% of the pixels, and more than
    one class predicted)."""
    import paddleseg.transforms as T
    from PIL import Image

    from paddle_models.core.export import export_model

    model.eval()
    info = export_model(model, str(tmp_path / folder), transforms=TINY_TRANSFORMS)
    assert info['onednn'], info['onednn_error']
    image = np.random.RandomState(0).randint(0, 256, tuple(size) + (3,)).astype('uint8')
    Image.fromarray(image).save(tmp_path / 'img.png')
    result = subprocess.run([sys.executable, INFER, '--config', info['deploy_yaml'], '--image_path',
                             str(tmp_path / 'img.png'), '--save_dir', str(tmp_path / 'out'), '--device', 'cpu',
                             '--enable_mkldnn', 'True', '--print_detail', 'False'],
                            capture_output=True, text=True, timeout=300, cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert 'oneDNN: on' in result.stderr
    pred = np.asarray(Image.open(tmp_path / 'out' / 'img.png')).astype('int64')
    x = T.Compose([T.Normalize(mean=[0.5] * 3, std=[0.5] * 3)])({'img': str(tmp_path / 'img.png')})['img']
    x = paddle.to_tensor(x[None].astype('float32'))  # the runner's preprocessing (PaddleSeg's Compose)
    with paddle.no_grad():
        logits = model(x)[0].numpy()
    ref = logits.argmax(1)[0]
    assert pred.shape == tuple(size) and len(np.unique(ref)) > 1
    assert (pred == ref).mean() > 0.995


# ------------------------------------------------------------------------------------------ scripts and tools

def load_script(relative_path, name=None):
    """A script of the repository (``tools/x.py``, ``deploy/python/infer.py``: not package modules) imported as a
    fresh module of its own, so that a test may patch it without affecting others."""
    name = name or os.path.splitext(os.path.basename(relative_path))[0] + '_under_test'
    spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, relative_path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_infer():
    """deploy/python/infer.py as a fresh module."""
    return load_script(os.path.join('deploy', 'python', 'infer.py'))


def run_tool(tool, *args, cwd=REPO):
    """Run the repository's ``tool`` (e.g. 'train.py') with ``args`` in a subprocess; returns the CompletedProcess."""
    return subprocess.run([sys.executable, os.path.join(REPO, tool)] + [str(a) for a in args], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def assert_one_line_error(proc, expected):
    """The tool exited with 2 and printed nothing on stderr but ``error: EXPECTED`` (no traceback)."""
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert 'Traceback' not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines == [f"error: {expected}"], proc.stderr[-3000:]


# ------------------------------------------------------------------------------------------ behaviour at any size

def assert_fits_any_size(model, shape, num_classes, local=True):
    """``model`` in eval mode on a random ``shape`` input: one output of ``[N, num_classes, H, W]``; each sample's
    output equals its output alone (no batch mixing); and, for a ``local`` model (one whose receptive field is
    small next to the input: not a deep backbone with global pooling), a 2x2 patch changed at the top-left, then
    the bottom-right corner, changes the output most in that corner's quarter of the image (padding, cropping and
    upsampling at odd sizes keep the output aligned with the input: a flipped, transposed or grossly shifted map
    moves the change away). Corners are checked from 16x16 inputs on (smaller ones have no room for it)."""
    model.eval()
    x = np.random.RandomState(0).randn(*shape).astype('float32')
    height, width = shape[2:]
    with paddle.no_grad():
        out = model(paddle.to_tensor(x))
        assert len(out) == 1 and out[0].shape == [shape[0], num_classes, height, width]
        base = out[0].numpy()
        alone = model(paddle.to_tensor(x[-1:]))[0].numpy()
        np.testing.assert_allclose(alone[0], base[-1], rtol=1e-5, atol=1e-5)
        if not local or min(height, width) < 16:
            return
        for rows, cols, corner in ((slice(0, 2), slice(0, 2), (0, 0)),
                                   (slice(-2, None), slice(-2, None), (height - 1, width - 1))):
            changed = x.copy()
            changed[0, :, rows, cols] += 5.0
            diff = np.abs(model(paddle.to_tensor(changed))[0].numpy()[0] - base[0]).sum(0)
            assert diff.max() > 1e-3
            row, col = np.unravel_index(diff.argmax(), diff.shape)
            assert abs(row - corner[0]) < height / 2 and abs(col - corner[1]) < width / 2, (corner, (row, col))
