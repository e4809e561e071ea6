"""The deploy protocol (``paddle_models/layers/deploy.py``): ``deploy_form`` copies the model, leaves it as it was,
and every layer's deploy form gives the model's eval values; no model, backbone or layer forward asks which graph
it is traced into."""
import os
import re

import numpy as np
import paddle
import pytest

import paddle_models  # noqa: F401  (registers our components)
from conftest import REPO
from helpers import perturb, randomize_norms
from paddle_models.backbones.maxvit import MaxViT
from paddle_models.backbones.mix_transformer import MixFFNMapForm, MixVisionTransformer_B0
from paddle_models.backbones.resnet_vd import ResNet18_vd
from paddle_models.errors import UserError
from paddle_models.layers.conv import ConvAct, ConvBNAct, ConvBNReLU
from paddle_models.layers.deploy import DeployTarget, deploy_form
from paddle_models.layers.ham import NMF2D
from paddle_models.layers.mlp import ConvMlp
from paddle_models.layers.pyramid import LowResPPModule, SplitFusionASPP
from paddle_models.models.deeplab import DeepLabV3
from paddle_models.models.linknet import LinkNet
from paddle_models.models.pspnet import PSPNet
from paddle_models.models.segformer import ExportedSegFormer, SegFormer

TARGETS = {
    'pir': DeployTarget(program='pir'),
    'pir-folded': DeployTarget(program='pir', fold_norms=True),
    'legacy': DeployTarget(program='legacy'),
    'onnx': DeployTarget(program='pir', runtime='onnx'),
}


def _segformer():
    return SegFormer(4, MixVisionTransformer_B0(drop_path_rate=0.0), embedding_dim=16)


def _pspnet():
    return PSPNet(num_classes=3, backbone=ResNet18_vd(output_stride=8), pp_out_channels=16)


def _deeplab():
    return DeepLabV3(num_classes=3, backbone=ResNet18_vd(output_stride=8), aspp_out_channels=8)


def _linknet():
    return LinkNet(num_classes=3)


MODELS = {'SegFormer': _segformer, 'PSPNet': _pspnet, 'DeepLabV3': _deeplab, 'LinkNet': _linknet}


def _built(name, seed=0):
    paddle.seed(seed)
    model = MODELS[name]()
    randomize_norms(model, seed + 1)  # batch norms that are not the identity: a wrong fold shows
    return model


def _first(out):
    return (out[0] if isinstance(out, (list, tuple)) else out).numpy()


def _state(model):
    return {k: v.numpy().copy() for k, v in model.state_dict().items()}


@pytest.mark.paddle26
@pytest.mark.parametrize('name', sorted(MODELS))
@pytest.mark.parametrize('target', sorted(TARGETS))
def test_deploy_form_equals_the_model_in_eval(name, target):
    """Every deploy form gives the dynamic model's eval logits (an odd input size: crops and ceil strides)."""
    model = _built(name)
    model.eval()
    x = paddle.to_tensor(np.random.RandomState(2).randn(1, 3, 45, 61).astype('float32'))
    form = deploy_form(model, TARGETS[target])
    with paddle.no_grad():
        want, got = _first(model(x)), _first(form(x))
    assert got.shape == want.shape == (1, 3 if name != 'SegFormer' else 4, 45, 61)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4 * max(1.0, float(np.abs(want).max())))


@pytest.mark.parametrize('name, target, kinds', [
    ('SegFormer', 'pir', (ExportedSegFormer, MixFFNMapForm)),
    ('SegFormer', 'legacy', (ExportedSegFormer, MixFFNMapForm)),
    ('PSPNet', 'pir', (LowResPPModule,)),
    ('DeepLabV3', 'pir-folded', (SplitFusionASPP, ConvAct)),
])
def test_deploy_form_has_the_target_s_layers(name, target, kinds):
    """The forms the targets ask for are there (and not those of other targets): the parity test above compares
    the right thing."""
    form = deploy_form(_built(name), TARGETS[target])
    layers = form.sublayers(include_self=True)
    for kind in kinds:
        assert any(isinstance(layer, kind) for layer in layers), kind.__name__
    if not TARGETS[target].fold_norms:
        assert not any(isinstance(layer, ConvAct) for layer in layers)
    if TARGETS[target].program == 'legacy':
        assert not any(isinstance(layer, (LowResPPModule, SplitFusionASPP)) for layer in layers)


def test_legacy_targets_keep_the_pyramids_and_switch_linknet():
    assert not any(isinstance(layer, LowResPPModule) for layer in deploy_form(_built('PSPNet'), TARGETS['legacy'])
                   .sublayers())
    linknet = _built('LinkNet')
    form = deploy_form(linknet, TARGETS['legacy'])
    assert form.legacy_form and all(block.legacy_form for block in form.decoders)
    assert not linknet.legacy_form and not any(block.legacy_form for block in linknet.decoders)
    assert not deploy_form(linknet, TARGETS['pir']).legacy_form


@pytest.mark.paddle26
@pytest.mark.parametrize('name', sorted(MODELS))
def test_deploy_form_leaves_the_model_as_it_was(name):
    """A copy: the model keeps its layers, weights, train/eval state and outputs; changing the form's weights does
    not reach the model."""
    model = _built(name)
    model.train()
    state = _state(model)
    layers = [type(layer) for layer in model.sublayers(include_self=True)]
    x = paddle.to_tensor(np.random.RandomState(3).randn(1, 3, 32, 48).astype('float32'))
    model.eval()
    with paddle.no_grad():
        before = _first(model(x))
    model.train()
    form = deploy_form(model, TARGETS['pir-folded'])
    assert form is not model and not form.training and model.training
    assert all(layer.training for layer in model.sublayers(include_self=True))
    assert [type(layer) for layer in model.sublayers(include_self=True)] == layers
    for parameter in form.parameters():
        parameter.set_value(paddle.zeros_like(parameter))
    after = _state(model)
    assert sorted(after) == sorted(state)
    for key, value in state.items():
        np.testing.assert_array_equal(after[key], value, err_msg=key)
    model.eval()
    with paddle.no_grad():
        np.testing.assert_array_equal(_first(model(x)), before)


def test_conv_bn_act_folds_only_when_asked():
    """``ConvBNAct.to_deploy``: with ``fold_norms`` a conv + activation computing conv -> BN -> act (running
    statistics); without it, the block itself."""
    paddle.seed(4)
    block = ConvBNReLU(3, 5, 3, padding=1)
    randomize_norms(block, 5)
    block.eval()
    x = paddle.randn([2, 3, 7, 9])
    folded = deploy_form(block, DeployTarget(fold_norms=True))
    assert isinstance(folded, ConvAct) and folded.conv.bias is not None
    with paddle.no_grad():
        want, got = block(x).numpy(), folded(x).numpy()
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * max(1.0, float(np.abs(want).max())))
    assert type(deploy_form(block, DeployTarget())) is ConvBNAct


def test_conv_mlp_is_never_sliced_in_its_deploy_form():
    """The sliced hidden channels are a dynamic-graph form: the deploy form runs one pass (same values)."""
    paddle.seed(6)
    mlp = ConvMlp(8, 32, sliced=True)
    mlp.eval()
    form = deploy_form(mlp, DeployTarget())
    assert mlp.sliced and not form.sliced
    x = paddle.randn([1, 8, 16, 16])
    with paddle.no_grad():
        np.testing.assert_allclose(form(x).numpy(), mlp(x).numpy(), rtol=0, atol=1e-5)


def test_maxvit_padding_names_four_axes_for_onnx_only():
    """MaxViT's downsampling shortcut: the ONNX deploy form pads through Paddle's 4-D ``pad`` (same values)."""
    paddle.seed(7)
    model = MaxViT(embed_dims=[32, 32, 64, 64], depths=[1, 1, 1, 1], stem_width=16, head_hidden_size=32)
    perturb(model.state_dict(), seed=8)
    model.eval()
    onnx, pir = deploy_form(model, TARGETS['onnx']), deploy_form(model, TARGETS['pir'])
    pads = {tuple(layer.padding) for layer in onnx.sublayers() if hasattr(layer, 'padding') and
            isinstance(getattr(layer, 'padding'), list)}
    assert pads == {(0, 0, 0, 0, 0, 1, 0, 1)}
    assert {tuple(layer.padding) for layer in pir.sublayers() if isinstance(getattr(layer, 'padding', None), list)} \
        == {(0, 1, 0, 1)}
    x = paddle.randn([1, 3, 45, 61])
    with paddle.no_grad():
        for got, want in zip(onnx(x), model(x)):
            np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=0, atol=1e-5 * float(want.abs().max()))


def test_bad_targets_are_user_errors():
    with pytest.raises(UserError) as err:
        DeployTarget(program='pdmodel')
    assert str(err.value) == "DeployTarget: program must be one of 'pir', 'legacy', got 'pdmodel'"
    with pytest.raises(UserError) as err:
        DeployTarget(runtime='onnx', portable_resize=True)
    assert str(err.value) == ("DeployTarget: portable_resize applies to the Paddle Inference runtime ('paddle') "
                              "only, got runtime 'onnx'")
    with pytest.raises(TypeError, match='target must be a DeployTarget, got str'):
        deploy_form(_built('LinkNet'), 'pir')


# the resize free function reads its trace-scoped forms (set only by layers/deploy.py: tracing_for) and keeps its
# memo for traced graphs only: the one module allowed to ask for the graph kind
_GRAPH_KIND = re.compile(r'static_graph_kind|in_dynamic_mode|in_pir_mode|onnx_tracing')
_ALLOWED = {os.path.join('layers', 'resize.py')}


def test_no_model_backbone_or_layer_asks_for_the_graph_kind():
    """No forward of a model, backbone or layer branches on the kind of graph it is traced into: that choice is
    each layer's ``to_deploy``."""
    package = os.path.join(REPO, 'paddle_models')
    offenders = []
    for folder in ('models', 'backbones', 'layers'):
        for name in sorted(os.listdir(os.path.join(package, folder))):
            relative = os.path.join(folder, name)
            if not name.endswith('.py') or relative in _ALLOWED:
                continue
            with open(os.path.join(package, relative), encoding='utf-8') as f:
                for number, line in enumerate(f, 1):
                    if _GRAPH_KIND.search(line):
                        offenders.append(f"{relative}:{number}: {line.strip()}")
    assert offenders == []
    with open(os.path.join(package, 'utils', 'compat.py'), encoding='utf-8') as f:
        assert 'def static_graph_kind' not in f.read()


def test_hamburger_auto_bases_are_fixed_in_the_deploy_form():
    """``inference_bases='auto'``: random bases in dynamic-graph eval (PaddleSeg's), the fixed ones in the deploy
    form, so an exported program is deterministic."""
    paddle.seed(9)
    nmf = NMF2D(16, {'MD_R': 4})
    nmf.eval()
    form = deploy_form(nmf, DeployTarget())
    assert nmf.inference_bases == 'auto' and form.inference_bases == 'fixed'
    x = paddle.rand([1, 16, 6, 5])
    with paddle.no_grad():
        paddle.seed(10)
        first = form(x).numpy()
        paddle.seed(11)
        np.testing.assert_array_equal(form(x).numpy(), first)
        nmf.inference_bases = 'fixed'
        np.testing.assert_allclose(nmf(x).numpy(), first, rtol=0, atol=1e-6)


class _Aliased(paddle.nn.Layer):
    """Blocks registered one by one and held again in plain containers for the forward (as HRNet's transition
    ``ops`` and fusion ``paths``)."""

    def __init__(self):
        super().__init__()
        self.first = ConvBNReLU(3, 4, 3, padding=1)
        self.second = ConvBNReLU(4, 4, 1)
        self.ops = [self.first, None]
        self.paths = [(('conv', self.second),)]
        self.table = {'first': self.first}

    def forward(self, x):
        y = self.ops[0](x)
        return self.paths[0][0][1](y) + self.table['first'](x)


def test_layers_held_in_plain_containers_are_their_forms_too():
    """A layer replaced by its form is replaced in the lists, tuples and dicts that held it as well: the form's
    forward reaches no layer it does not hold (else a trace saves parameters the form's state dict lacks)."""
    paddle.seed(12)
    model = _Aliased()
    randomize_norms(model, 13)
    model.eval()
    form = deploy_form(model, DeployTarget(fold_norms=True))
    assert isinstance(form.first, ConvAct) and form.ops[0] is form.first and form.ops[1] is None
    assert form.paths[0][0] == ('conv', form.second) and isinstance(form.second, ConvAct)
    assert form.table['first'] is form.first
    assert model.ops[0] is model.first and isinstance(model.first, ConvBNAct)  # the model's own, unchanged
    x = paddle.randn([1, 3, 9, 7])
    with paddle.no_grad():
        want = model(x).numpy()
        np.testing.assert_allclose(form(x).numpy(), want, rtol=0, atol=1e-5 * float(np.abs(want).max()))
