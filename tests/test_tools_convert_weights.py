"""tools/convert_weights.py: the command line, the key maps registered beside each model (torchvision/timm ResNeXt,
official VAN, the plug-in protocol, the --help listing), reading without executing pickled code, and one-line errors
that name the key and both shapes (nothing is written then)."""
import os
import re
import subprocess
import sys

import numpy as np
import paddle
import pytest

import paddle_models  # noqa: F401  (registers our components)
from paddle_models.backbones import van as van_module
from paddle_models.backbones.resnext import ResNeXt50_32x4d
from paddle_models.backbones.van import VAN_B0
from paddle_models.errors import UserError
from paddle_models.registry import CONVERTERS, register_converter
from helpers import load_script

# safetensors is a requirement of tools/convert_weights.py (requirements.txt); absent only from environments that
# never convert weights (the Paddle 2.6 smoke environment)
safetensors_numpy = pytest.importorskip('safetensors.numpy', reason='tools/convert_weights.py needs safetensors '
                                                                   '(pip install safetensors)')
load_file, save_file = safetensors_numpy.load_file, safetensors_numpy.save_file

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOL = os.path.join(REPO, 'tools', 'convert_weights.py')
convert_weights = load_script(os.path.relpath(TOOL, REPO))


def _torch_layout(paddle_state, linear_keys=()):
    """A Paddle state dict as PyTorch would store it: BN running statistics + num_batches_tracked, [out, in]
    linear weights."""
    out = {}
    for key, value in paddle_state.items():
        value = value.numpy()
        if key in linear_keys:
            value = value.T
        key = key.replace('._mean', '.running_mean').replace('._variance', '.running_var')
        out[key] = np.ascontiguousarray(value)
        if key.endswith('.running_var'):
            out[key[:-len('running_var')] + 'num_batches_tracked'] = np.array(7, dtype='int64')
    return out


@pytest.fixture(scope='module')
def van_official(tmp_path_factory):
    """An official-layout VAN-B0 checkpoint (safetensors) and the model it came from."""
    paddle.seed(0)
    model = VAN_B0(num_classes=10)
    model.eval()
    path = tmp_path_factory.mktemp('van') / 'van_b0.safetensors'
    save_file(_torch_layout(model.state_dict(), ('head.weight',)), str(path))
    return path, model


def test_command_line_converts_and_the_result_loads(van_official, tmp_path):
    path, source = van_official
    out = tmp_path / 'sub' / 'van_b0.pdparams'
    proc = subprocess.run([sys.executable, TOOL, '--arch', 'VAN_B0', '--format', 'official', '--input', str(path),
                           '--output', str(out)], capture_output=True, text=True, timeout=300, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == (f"wrote {out}: 372 tensors for VAN_B0(num_classes=10) from {path} "
                                   f"(official layout)")
    assert sorted(os.listdir(out.parent)) == ['van_b0.pdparams']  # no temporary file left
    backbone = VAN_B0(pretrained=str(out))  # features only: the head is ignored
    backbone.eval()
    x = paddle.randn([1, 3, 64, 64])
    for got, want in zip(backbone(x), source(x)):
        np.testing.assert_array_equal(got.numpy(), want.numpy())


def test_torchvision_and_timm_resnext_layouts(tmp_path):
    """torchvision's resnext50_32x4d layout (here: paddle.vision's model stored the PyTorch way) converts to a
    ResNeXt50_32x4d with the same outputs; timm's plain ResNeXt uses the same names."""
    paddle.seed(0)
    reference = paddle.vision.models.resnext50_32x4d()
    reference.eval()
    path = tmp_path / 'resnext50_32x4d.safetensors'
    save_file(_torch_layout(reference.state_dict(), ('fc.weight',)), str(path))
    written = {}
    for fmt in ('torchvision', 'timm'):
        info = convert_weights.convert('ResNeXt50_32x4d', fmt, str(path), str(tmp_path / f'{fmt}.pdparams'))
        assert info['kwargs'] == {'num_classes': 1000} and info['tensors'] == len(reference.state_dict())
        written[fmt] = paddle.load(str(tmp_path / f'{fmt}.pdparams'))
    model = ResNeXt50_32x4d(num_classes=1000)
    model.set_state_dict(written['torchvision'])
    model.eval()
    x = paddle.randn([1, 3, 64, 64])
    np.testing.assert_allclose(model.classify(x).numpy(), reference(x).numpy(), rtol=1e-5, atol=1e-5)
    for key, value in written['timm'].items():
        np.testing.assert_array_equal(value.numpy(), written['torchvision'][key].numpy())


def test_pytorch_checkpoints_are_read_with_weights_only(van_official, tmp_path):
    torch = pytest.importorskip('torch', reason='reading .pth files needs torch (pip install torch==2.13.0)')
    path, source = van_official
    tensors = {k: torch.from_numpy(v) for k, v in load_file(str(path)).items()}
    # the release wraps its weights in 'state_dict'; DistributedDataParallel adds 'module.'
    torch.save({'epoch': 300, 'state_dict': {f'module.{k}': v for k, v in tensors.items()}}, str(tmp_path / 'a.pth'))
    info = convert_weights.convert('VAN_B0', 'official', str(tmp_path / 'a.pth'), str(tmp_path / 'a.pdparams'))
    assert info['kwargs'] == {'num_classes': 10}
    converted = paddle.load(str(tmp_path / 'a.pdparams'))
    for key, value in source.state_dict().items():
        np.testing.assert_array_equal(converted[key].numpy(), value.numpy())

    # a pickle that would run code (an arbitrary object) is refused, not executed
    torch.save({'state_dict': tensors, 'hook': _Pickled()}, str(tmp_path / 'evil.pth'))
    with pytest.raises(UserError) as err:
        convert_weights.convert('VAN_B0', 'official', str(tmp_path / 'evil.pth'), str(tmp_path / 'evil.pdparams'))
    assert str(err.value) == (f"--input: {tmp_path / 'evil.pth'}: refusing to load: it references "
                              f"{os.getcwd.__module__}.getcwd, which a weights file never holds (loading it could run "
                              f"code)")
    assert '\n' not in str(err.value) and not (tmp_path / 'evil.pdparams').exists()


class _Pickled:
    def __reduce__(self):
        return (os.getcwd, ())


def test_missing_torch_is_one_line(monkeypatch, tmp_path):
    (tmp_path / 'w.pth').write_bytes(b'not read')
    monkeypatch.setitem(sys.modules, 'torch', None)  # import torch -> ImportError
    with pytest.raises(UserError) as err:
        convert_weights.convert('VAN_B0', 'official', str(tmp_path / 'w.pth'), str(tmp_path / 'w.pdparams'))
    assert str(err.value) == (f"--input: reading {tmp_path / 'w.pth'} needs PyTorch (pip install torch), or give "
                              f"a .safetensors file")


def test_shapes_keys_and_arguments_that_do_not_fit(van_official, tmp_path):
    path, _ = van_official
    state = load_file(str(path))
    out = tmp_path / 'out.pdparams'

    def error(arch, fmt, tensors=None, name='c.safetensors', output=out):
        src = tmp_path / name
        if tensors is not None:
            save_file(tensors, str(src))
        with pytest.raises(UserError) as err:
            convert_weights.convert(arch, fmt, str(src), str(output))
        assert not out.exists()
        return str(err.value)

    src = tmp_path / 'c.safetensors'
    assert re.fullmatch(re.escape(f"{src} does not fit VAN_B1: ") + r"\d+ shape mismatches, e\.g\. " + re.escape(
        "patch_embed1.proj.weight has shape [32, 3, 7, 7] in the file but [64, 3, 7, 7] in the model"),
        error('VAN_B1', 'official', state))
    fewer = {k: v for k, v in state.items() if not k.startswith('norm4.')}
    assert error('VAN_B0', 'official', fewer) == (f"{src} does not fit VAN_B0: 2 keys missing from the file "
                                                  f"(norm4.weight, norm4.bias)")
    extra = dict(state, **{'aux.weight': np.zeros([2], 'float32'), 'aux.bias': np.zeros([2], 'float32')})
    assert error('VAN_B0', 'official', extra) == (f"{src} does not fit VAN_B0: 2 keys not in the model "
                                                  f"(aux.bias, aux.weight)")  # (safetensors sorts its keys)
    # (the other suggestions depend on what else is registered)
    assert error('MaxVit_T', 'timm').startswith("--arch: unknown architecture 'MaxVit_T' (did you mean MaxViT_T, ")
    assert error('VAN_B0', 'timm') == "--format: VAN_B0 has no 'timm' key map (formats for VAN_B0: hf, official)"
    assert error('VAN_B0', 'official', name='nope.safetensors') == f"--input: {tmp_path / 'nope.safetensors'} " \
                                                                   f"does not exist"
    (tmp_path / 'w.npz').write_bytes(b'x')
    assert error('VAN_B0', 'official', name='w.npz') == (f"--input: {tmp_path / 'w.npz'}: unknown checkpoint type; "
                                                         f"expected .safetensors or one of .pth, .pt, .bin, .ckpt, "
                                                         f".tar")
    (tmp_path / 'bad.safetensors').write_bytes(b'garbage')
    assert error('VAN_B0', 'official', name='bad.safetensors').startswith(
        f"--input: {tmp_path / 'bad.safetensors'} is not a readable safetensors file (")
    assert error('VAN_B0', 'official', state, output=tmp_path / 'w.bin') == \
        f"--output: {tmp_path / 'w.bin'} must end in .pdparams"


def test_command_line_errors_are_one_line_with_exit_2(tmp_path):
    proc = subprocess.run([sys.executable, TOOL, '--arch', 'ResNeXt50_32x4d', '--format', 'hf', '--input',
                           str(tmp_path / 'x.pth'), '--output', str(tmp_path / 'x.pdparams')],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert 'Traceback' not in proc.stderr
    assert [line for line in proc.stderr.splitlines() if line.strip()] == [
        "error: --format: ResNeXt50_32x4d has no 'hf' key map (formats for ResNeXt50_32x4d: timm, torchvision)"]


def test_other_families_plug_in_a_key_map_by_registering_it(monkeypatch, van_official, tmp_path):
    """``@register_converter(format, *arch_names)`` beside the model is all a new checkpoint layout needs."""
    path, source = van_official
    monkeypatch.setitem(CONVERTERS, 'VAN_B0', dict(CONVERTERS['VAN_B0']))  # undone after the test

    @register_converter('prefixed', 'VAN_B0')
    def strip_net_prefix(state, arch):
        stripped = {k[len('net.'):]: v for k, v in state.items()}
        return van_module.convert_official_weights(stripped, arch)

    assert sorted(convert_weights.key_maps('VAN_B0')) == ['hf', 'official', 'prefixed']
    assert 'prefixed' not in convert_weights.key_maps('VAN_B1')
    save_file({f'net.{k}': v for k, v in load_file(str(path)).items()}, str(tmp_path / 'p.safetensors'))
    info = convert_weights.convert('VAN_B0', 'prefixed', str(tmp_path / 'p.safetensors'), str(tmp_path / 'p.pdparams'))
    assert info['kwargs'] == {'num_classes': 10}
    converted = paddle.load(str(tmp_path / 'p.pdparams'))
    np.testing.assert_array_equal(converted['head.weight'].numpy(), source.head.weight.numpy())


def test_formats_come_from_registration_not_function_names(monkeypatch, van_official, tmp_path):
    """Renaming a registered key map keeps its format; a function merely named like one adds none."""
    path, source = van_official
    key_map = CONVERTERS['VAN_B0']['official']
    monkeypatch.delattr(van_module, key_map.__name__)
    monkeypatch.setattr(key_map, '__name__', 'map_release_keys')
    monkeypatch.setattr(van_module, 'map_release_keys', key_map, raising=False)
    monkeypatch.setattr(van_module, 'convert_timm_weights', van_module.map_release_keys, raising=False)
    info = convert_weights.convert('VAN_B0', 'official', str(path), str(tmp_path / 'v.pdparams'))
    assert info['tensors'] == len(source.state_dict())
    with pytest.raises(UserError) as err:
        convert_weights.convert('VAN_B0', 'timm', str(path), str(tmp_path / 't.pdparams'))
    assert str(err.value) == "--format: VAN_B0 has no 'timm' key map (formats for VAN_B0: hf, official)"


def test_an_architecture_without_converters_is_one_line(tmp_path):
    with pytest.raises(UserError) as err:
        convert_weights.convert('HarDNet', 'hf', str(tmp_path / 'x.pth'), str(tmp_path / 'x.pdparams'))
    assert str(err.value) == ("--format: HarDNet has no 'hf' key map (formats for HarDNet: none; see --help for the "
                              "architectures that have converters)")


def test_a_family_name_asks_for_the_size_before_reading_the_checkpoint(tmp_path):
    """`--arch SegFormer` (the family) cannot be built from a checkpoint's arguments: the error names the sizes."""
    result = subprocess.run([sys.executable, TOOL, '--arch', 'SegFormer', '--format', 'hf', '--input',
                             str(tmp_path / 'x.safetensors'), '--output', str(tmp_path / 'x.pdparams')],
                            capture_output=True, text=True)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == ("error: --arch: SegFormer is a model family; name its size, one of SegFormer_B0, "
                                     "SegFormer_B1, SegFormer_B2, SegFormer_B3, SegFormer_B4, SegFormer_B5 (the 'hf' "
                                     "checkpoint must match it)")
    assert not (tmp_path / 'x.pdparams').exists()


def test_help_lists_every_architecture_and_its_formats(capsys):
    with pytest.raises(SystemExit) as exited:
        convert_weights.parse_args(['--help'])
    assert exited.value.code == 0
    lines = capsys.readouterr().out.splitlines()
    assert '  VAN_B0: hf, official' in lines and '  MaxViT_T: timm' in lines
    assert '  ResNeXt50_32x4d: timm, torchvision' in lines
    listed = {line.strip().split(': ')[0] for line in lines[lines.index(
        'architectures and their checkpoint formats (--arch: --format):') + 1:]}
    assert listed == {arch for arch, formats in CONVERTERS.items() if formats}
    assert 'HarDNet' not in listed


def test_timm_maxvit_checkpoint_without_classifier(tmp_path):
    """timm's maxvit_tiny_tf_224 layout (here: our MaxViT-T stored the PyTorch way) saved with num_classes=0 --
    head.norm and head.pre_logits but no head.fc -- converts to the features-only backbone."""
    paddle.seed(0)
    with paddle.LazyGuard():
        shapes = {k: v.shape for k, v in paddle_models.backbones.MaxViT_T(num_classes=1000).state_dict().items()}
    rng = np.random.RandomState(0)
    state = {}
    for key, shape in shapes.items():
        if key.startswith('head.fc.'):
            continue
        value = rng.standard_normal(shape).astype('float32') * 0.01
        if len(shape) == 2:
            value = np.ascontiguousarray(value.T)  # timm nn.Linear: [out, in]
        state[key.replace('._mean', '.running_mean').replace('._variance', '.running_var')] = value
    save_file(state, str(tmp_path / 'model.safetensors'))
    info = convert_weights.convert('MaxViT_T', 'timm', str(tmp_path / 'model.safetensors'),
                                   str(tmp_path / 'maxvit_t.pdparams'))
    assert info['kwargs'] == {'num_classes': 0}
    assert info['tensors'] == 526 - 6  # no head: norm, pre_logits.fc and fc (weight and bias each) are gone
    converted = paddle.load(str(tmp_path / 'maxvit_t.pdparams'))
    np.testing.assert_array_equal(converted['stages.3.blocks.1.attn_grid.mlp.fc2.weight'].numpy(),
                                  state['stages.3.blocks.1.attn_grid.mlp.fc2.weight'].T)
    np.testing.assert_array_equal(converted['stem.norm1._variance'].numpy(), state['stem.norm1.running_var'])
