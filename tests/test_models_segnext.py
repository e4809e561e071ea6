"""SegNeXt + MSCAN + LightHam: parameter count (mmseg's), strict parity with PaddleSeg 2.8.0 (SegNeXt-T, RNG seeded
before each forward for the random NMF bases), the deterministic inference mode, export with a free input size +
deploy/python/infer.py with oneDNN (deterministic by default), the mmseg layout, upper-case ham_kwargs, the config.
"""
import os

import numpy as np
import paddle
import paddle.nn as nn
import paddleseg.transforms as T
import pytest
from PIL import Image
from paddleseg.cvlibs import manager

from conftest import REPO
import paddle_models  # noqa: F401  (registers our components)
from paddle_models.layers import mlp as mlp_module  # where ConvMlp calls sliced_conv_mlp
from paddle_models.backbones.mscan import MSCAN, MSCAN_T
from paddle_models.layers import conv_mlp
from paddle_models.core.export import export_model
from paddle_models.errors import UserError
from paddle_models.models.segnext import SegNeXt, SegNeXt_T
from helpers import count_params, export_and_infer, load_script, perturb, strict_load

convert_weights = load_script(os.path.join('tools', 'convert_weights.py'))


def _tiny(num_classes=4, **decoder):
    """A narrow SegNeXt (MSCAN widths 16..32, one block per stage) for the slower tests."""
    cfg = dict(channels=16, ham_channels=16, num_groups=4, ham_kwargs=dict(MD_R=4))
    cfg.update(decoder)
    return SegNeXt(MSCAN(embed_dims=[16, 16, 24, 32], depths=[1, 1, 1, 1]), cfg, num_classes)


def test_registered_and_parameter_counts():
    with paddle.LazyGuard():
        t = manager.MODELS.components_dict['SegNeXt_T'](num_classes=150)
        backbones = {n: count_params(manager.BACKBONES.components_dict[f'MSCAN_{n}']()) for n in 'TSBL'}
    assert count_params(t) == 4_263_414  # mmseg 1.2.2: MSCAN-T + LightHamHead, 150 classes
    assert count_params(t.backbone) == backbones['T']
    assert backbones['T'] < backbones['S'] < backbones['B'] < backbones['L']
    assert manager.MODELS.components_dict['SegNeXt'] is SegNeXt


@pytest.mark.paddle26
def test_parity_with_paddleseg_segnext_t():
    from paddleseg.models import SegNeXt as ReferenceSegNeXt
    from paddleseg.models.backbones.mscan import MSCAN_T as ReferenceMSCAN_T

    paddle.seed(0)
    reference = ReferenceSegNeXt(ReferenceMSCAN_T(), dict(channels=256, ham_channels=256, ham_kwargs=dict(MD_R=16)),
                                 5)
    reference.eval()
    state = perturb(reference.state_dict(), seed=1)
    ours = SegNeXt_T(num_classes=5)
    ours.eval()
    strict_load(ours, state)
    for shape in ([2, 3, 64, 64], [1, 3, 72, 50]):
        x = paddle.to_tensor(np.random.RandomState(2).randn(*shape).astype('float32'))
        with paddle.no_grad():
            paddle.seed(7)
            want = reference(x)[0].numpy()
            paddle.seed(7)
            got = ours(x)[0].numpy()
            paddle.seed(8)
            other_seed = reference(x)[0].numpy()
        scale = float(np.abs(want).max())
        assert got.shape == want.shape == tuple([shape[0], 5] + shape[2:])
        assert float(np.abs(got - want).max()) <= 1e-4 * scale
        # what seeding hides: PaddleSeg's eval output moves with the random bases
        assert float(np.abs(other_seed - want).max()) > 1e-3 * scale


def test_deterministic_inference_mode():
    paddle.seed(0)
    model = _tiny()
    perturb(model.state_dict(), seed=2)
    model.eval()
    x = paddle.randn([1, 3, 64, 64])
    with paddle.no_grad():
        random_a, random_b = model(x)[0].numpy(), model(x)[0].numpy()
    assert float(np.abs(random_a - random_b).max()) > 1e-4  # 'auto' in dynamic eval = PaddleSeg's random bases
    names = set(model.state_dict())
    fixed = _tiny(inference_bases='fixed')
    assert set(fixed.state_dict()) == names  # the fixed bases are not saved: same checkpoints
    fixed.set_state_dict(model.state_dict())
    fixed.eval()
    with paddle.no_grad():
        a = fixed(x)[0].numpy()
        paddle.seed(123)
        b = fixed(x)[0].numpy()
    np.testing.assert_array_equal(a, b)
    fixed.train()  # training keeps random bases
    assert float(np.abs(fixed(x)[0].numpy() - fixed(x)[0].numpy()).max()) > 0
    with pytest.raises(UserError) as err:
        _tiny(inference_bases='seeded')
    assert str(err.value) == "LightHamHead: inference_bases must be one of 'auto', 'fixed', 'random', got 'seeded'"


def test_export_free_size_deterministic_and_infer_with_onednn(tmp_path, monkeypatch):
    paddle.seed(0)
    model = _tiny(num_classes=5)
    perturb(model.state_dict(), seed=3)
    model.eval()
    transforms = [{'type': 'Normalize', 'mean': [0.5, 0.5, 0.5], 'std': [0.5, 0.5, 0.5]}]
    slices = _count_sliced_mlps(monkeypatch)
    info = export_model(model, str(tmp_path / 'export'), transforms=transforms, output_op='none')
    assert info['onednn'], info['onednn_error']
    assert slices == [], slices  # exported programs run the MLPs in one pass (sliced ones were slower under oneDNN)
    image = np.random.RandomState(0).randint(0, 256, (72, 120, 3)).astype('uint8')
    Image.fromarray(image).save(tmp_path / 'img.png')
    x = T.Compose([T.Normalize(mean=[0.5] * 3, std=[0.5] * 3)])({'img': str(tmp_path / 'img.png')})['img']
    x = x[None].astype('float32')
    # the exported program starts from the fixed bases: two runs agree with each other and with 'fixed' eval
    config = paddle.inference.Config(info['model'], info['params'])
    config.enable_mkldnn()
    predictor = paddle.inference.create_predictor(config)
    outs = []
    for _ in range(2):
        handle = predictor.get_input_handle(predictor.get_input_names()[0])
        handle.reshape(x.shape)
        handle.copy_from_cpu(x)
        predictor.run()
        outs.append(predictor.get_output_handle(predictor.get_output_names()[0]).copy_to_cpu())
    np.testing.assert_array_equal(outs[0], outs[1])
    model.decode_head.hamburger.ham.inference_bases = 'fixed'
    with paddle.no_grad():
        want = model(paddle.to_tensor(x))[0].numpy()
    assert outs[0].shape == want.shape == (1, 5, 72, 120)
    np.testing.assert_allclose(outs[0], want, rtol=1e-3, atol=1e-3 * np.abs(want).max())
    export_and_infer(model, tmp_path, size=(72, 120), folder='export2')  # and the runner: argmax export, oneDNN on


def test_mmseg_layout_converts(tmp_path):
    """mmseg names (``spatial_gating_unit.conv{0,1,2}_{1,2}``, ``conv3``, ``mlp.dwconv.dwconv``, layer scales [C],
    ``running_mean``; head ConvModules ``conv``/``gn``, ``ham_in.conv``) convert onto the same SegNeXt-T."""
    save_file = pytest.importorskip('safetensors.numpy', reason='needs safetensors').save_file
    paddle.seed(0)
    source = SegNeXt_T(num_classes=6)
    perturb(source.state_dict(), seed=4)
    mm = {}
    for key, value in source.state_dict().items():
        value = value.numpy()
        for ours, theirs in (('dwconvs.0.conv1_', 'conv0_'), ('dwconvs.1.conv2_', 'conv1_'),
                             ('dwconvs.2.conv3_', 'conv2_'), ('conv_out.', 'conv3.'), ('mlp.dwconv.', 'mlp.dwconv.dwconv.'),
                             ('._mean', '.running_mean'), ('._variance', '.running_var'), ('._conv.', '.conv.'),
                             ('._group_norm.', '.gn.'), ('ham_in.', 'ham_in.conv.')):
            key = key.replace(ours, theirs)
        if 'layer_scale' in key:
            value = value.reshape(-1)
        mm[key] = np.ascontiguousarray(value)
    assert 'backbone.block1.0.attn.spatial_gating_unit.conv2_2.weight' in mm
    assert 'decode_head.hamburger.ham_out.gn.weight' in mm
    save_file(mm, str(tmp_path / 'segnext.safetensors'))
    info = convert_weights.convert('SegNeXt_T', 'mmseg', str(tmp_path / 'segnext.safetensors'),
                                   str(tmp_path / 't.pdparams'))
    assert info['kwargs'] == {'num_classes': 6}
    target = SegNeXt_T(num_classes=6, pretrained=str(tmp_path / 't.pdparams'))
    for key, value in source.state_dict().items():
        np.testing.assert_array_equal(target.state_dict()[key].numpy(), value.numpy())
    # the backbone alone from the same file
    convert_weights.convert('MSCAN_T', 'mmseg', str(tmp_path / 'segnext.safetensors'), str(tmp_path / 'b.pdparams'))
    MSCAN_T(pretrained=str(tmp_path / 'b.pdparams'))


def test_ham_kwargs_must_be_upper_case():
    with pytest.raises(UserError) as err:
        _tiny(ham_kwargs=dict(md_r=4))
    assert str(err.value) == ("LightHamHead: unknown ham_kwargs key 'md_r' (keys are upper case: MD_R); known: "
                              "SPATIAL, MD_S, MD_D, MD_R, TRAIN_STEPS, EVAL_STEPS, INV_T, ETA, RAND_INIT")
    with pytest.raises(UserError) as err:
        _tiny(ham_kwargs=dict(MD_R=0))
    assert str(err.value) == "LightHamHead: ham_kwargs MD_R must be an integer >= 1, got 0"
    with pytest.raises(UserError) as err:
        MSCAN(depths=[1, 1, 1])
    assert str(err.value) == "MSCAN: depths must be a list of 4 integers >= 1, got [1, 1, 1]"


def test_rand_init_false_keeps_saved_bases():
    paddle.seed(0)
    model = _tiny(ham_kwargs=dict(MD_R=4, RAND_INIT=False))
    assert list(model.state_dict()['decode_head.hamburger.ham.bases'].shape) == [1, 16, 4]
    model.eval()
    x = paddle.randn([1, 3, 32, 32])
    np.testing.assert_array_equal(model(x)[0].numpy(), model(x)[0].numpy())


def test_camvid_config_builds_and_trains_a_step():
    from paddle_models.core.config import Builder, load_config

    builder = Builder(load_config(os.path.join(REPO, 'configs', 'segnext_t_camvid.yml')))
    model = builder.model()
    assert isinstance(model, SegNeXt) and isinstance(model.backbone, MSCAN)
    assert model.decode_head.hamburger.ham.R == 16
    model.train()
    out = model(paddle.randn([2, 3, 64, 64]))
    assert out[0].shape == [2, 11, 64, 64]
    out[0].mean().backward()
    assert float(model.decode_head.conv_seg.weight.grad.abs().sum()) > 0
    assert float(model.backbone.patch_embed1.proj[0].weight.grad.abs().sum()) > 0


def _count_sliced_mlps(monkeypatch):
    """Record the slice width of every sliced MLP forward (the traced ones included)."""
    seen = []
    original = mlp_module.sliced_conv_mlp

    def spy(x, fc1, dwconv, act, fc2, step):
        seen.append(step)
        return original(x, fc1, dwconv, act, fc2, step)
    monkeypatch.setattr(mlp_module, 'sliced_conv_mlp', spy)
    return seen


def test_eval_mlp_slices_give_the_one_pass_result(monkeypatch):
    """Dynamic-graph eval forwards on maps over CHUNK_ELEMENTS hidden elements run the MLP in slices: same backbone
    outputs as one pass; training forwards never slice."""
    paddle.seed(4)
    backbone = MSCAN(embed_dims=[16, 24, 32, 40], depths=[2, 1, 1, 1], mlp_ratios=[10, 8, 4, 4])
    perturb(backbone.state_dict(), seed=5)
    backbone.eval()
    x = paddle.randn([2, 3, 64, 48])
    with paddle.no_grad():
        one_pass = [f.numpy() for f in backbone(x)]
        slices = _count_sliced_mlps(monkeypatch)
        monkeypatch.setattr(conv_mlp, 'CHUNK_ELEMENTS', 1)  # slice every MLP with more than 64 hidden channels
        sliced = [f.numpy() for f in backbone(x)]
    # stage 1 (160 hidden: 64 + 64 + 32) twice, stages 2-4 (192, 128, 160 hidden) once each
    assert slices == [64] * 5, slices
    for got, want in zip(sliced, one_pass):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    backbone.train()
    backbone(x)[0].mean().backward()
    assert slices == [64] * 5
    assert backbone.block1[0].mlp.fc1.weight.grad is not None
    backbone.eval()
    with paddle.no_grad(), conv_mlp.unsliced():
        backbone(x)
    assert slices == [64] * 5  # unsliced(): one pass


def test_sliced_conv_mlp_matches_the_layers():
    """Uneven last slice, convs with and without bias, a dilated depthwise conv."""
    paddle.seed(6)
    fc1 = nn.Conv2D(6, 100, 1)
    dwconv = nn.Conv2D(100, 100, 3, padding=2, dilation=2, groups=100, bias_attr=False)
    fc2 = nn.Conv2D(100, 5, 1, bias_attr=False)
    act = nn.GELU()
    x = paddle.randn([2, 6, 9, 7])
    want = fc2(act(dwconv(fc1(x)))).numpy()
    for step in (64, 33, 100):
        got = conv_mlp.sliced_conv_mlp(x, fc1, dwconv, act, fc2, step).numpy()
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5, err_msg=str(step))
    assert conv_mlp.hidden_slice(512, 128 * 128) == 64 and conv_mlp.hidden_slice(1024, 64 * 64) == 256
    assert conv_mlp.hidden_slice(256, 64 * 64) is None and conv_mlp.hidden_slice(64, 1) is None
