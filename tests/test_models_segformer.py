"""SegFormer + MiT: parameter counts (HuggingFace's), strict parity with PaddleSeg 2.8.0 (B0, B2), the fused decoder
against its literal form, export with a free input size + deploy/python/infer.py with oneDNN, HuggingFace weight
import (safetensors without torch, .bin with torch) with parity against transformers, the mmseg MiT layout, whole
mmseg SegFormer checkpoints (mmseg's SegformerHead, against a numpy forward), the CamVid config and argument errors.

The transformers parity test needs ``torch==2.13.0`` and ``transformers==4.57.6``; it skips, naming what is
missing, where they are not installed.
"""
import os
import subprocess
import sys

import numpy as np
import paddle
import paddle.nn.functional as F
import pytest
from paddleseg.cvlibs import manager

from conftest import REPO
import paddle_models  # noqa: F401  (registers our components)
from paddle_models.backbones.mix_transformer import MixFFNMapForm, MixVisionTransformer, MixVisionTransformer_B0
from paddle_models.errors import UserError
from paddle_models.layers.deploy import DeployTarget, deploy_form
from paddle_models.models.segformer import ExportedSegFormer, SegFormer, SegFormer_B0
from helpers import count_params, export_and_infer, load_script, perturb, strict_load

convert_weights = load_script(os.path.join('tools', 'convert_weights.py'))


def test_registered_and_parameter_counts():
    with paddle.LazyGuard():
        b0 = manager.MODELS.components_dict['SegFormer_B0'](num_classes=150)
        sizes = {n: count_params(manager.BACKBONES.components_dict[f'MixVisionTransformer_{n}']())
                 for n in ('B0', 'B1', 'B2', 'B3', 'B4', 'B5')}
    # transformers 4.57.6 SegformerForSemanticSegmentation(num_labels=150) counts 3,752,694
    assert count_params(b0) == 3_752_694
    assert manager.MODELS.components_dict['SegFormer'] is SegFormer
    # the paper's encoder sizes (Table 1 lists 3.7M / 13.7M / 27.5M / 45.2M / 64.1M / 84.7M with the decoder;
    # the encoders alone are 3.3M / 13.1M / 24.2M / 44.0M / 60.8M / 81.4M)
    assert [round(sizes[n] / 1e6, 1) for n in ('B0', 'B1', 'B2', 'B3', 'B4', 'B5')] == \
        [3.3, 13.2, 24.2, 44.1, 60.8, 81.4]


@pytest.mark.paddle26
@pytest.mark.parametrize('size', ['B0', 'B2'])
def test_parity_with_paddleseg(size):
    from paddleseg.models import SegFormer as ReferenceSegFormer
    from paddleseg.models.backbones import mix_transformer as reference_mit

    paddle.seed(0)
    embedding = 256 if size == 'B0' else 768
    reference = ReferenceSegFormer(5, getattr(reference_mit, f'MixVisionTransformer_{size}')(), embedding)
    reference.eval()
    state = perturb(reference.state_dict(), seed=1)
    ours = manager.MODELS.components_dict[f'SegFormer_{size}'](num_classes=5)
    ours.eval()
    strict_load(ours, state)
    for shape in ([2, 3, 64, 64], [1, 3, 70, 45]):  # odd sizes: ceil strides, reductions that floor
        x = paddle.to_tensor(np.random.RandomState(2).randn(*shape).astype('float32'))
        with paddle.no_grad():
            want = reference(x)[0].numpy()
            got = ours(x)
        assert len(got) == 1 and list(got[0].shape) == [shape[0], 5, *shape[2:]]
        scale = float(np.abs(want).max())
        assert scale > 0.5
        assert float(np.abs(got[0].numpy() - want).max()) <= 1e-4 * scale


def test_fused_decoder_equals_literal_decoder():
    """The forward's per-level fused 1x1 convs (and the exported form, :meth:`ExportedSegFormer.decoder`) equal
    linear_c{i} -> upsample -> concat -> linear_fuse, the forward also in training mode (BN batch statistics, gradients reach every decoder parameter)."""
    paddle.seed(3)
    model = SegFormer(4, MixVisionTransformer_B0(drop_path_rate=0.0), embedding_dim=32, dropout_prob=0.0)
    perturb(model.state_dict(), seed=4)
    x = paddle.randn([2, 3, 64, 96])
    feats = model.backbone(x)
    size = feats[0].shape[2:]
    parts = [F.interpolate(p(f), size=size, mode='bilinear') if i else p(f)
             for i, (p, f) in enumerate(zip([model.linear_c1, model.linear_c2, model.linear_c3, model.linear_c4],
                                            feats))]
    model.eval()
    fused = model.linear_fuse(paddle.concat(parts[::-1], axis=1))
    # the exported programs' decoder: batch norm folded into the level convs, one product for the upsampled levels
    literal = model.linear_pred(fused)
    exported = deploy_form(model, DeployTarget())
    assert isinstance(exported, ExportedSegFormer)
    np.testing.assert_allclose(exported.decoder(feats).numpy(), literal.numpy(), rtol=1e-4,
                               atol=1e-4 * np.abs(literal.numpy()).max())
    literal = F.interpolate(literal, size=[64, 96], mode='bilinear').numpy()
    np.testing.assert_allclose(model(x)[0].numpy(), literal, rtol=1e-4, atol=1e-4 * np.abs(literal).max())
    model.train()
    loss = model(x)[0].mean()
    loss.backward()
    for name in ('linear_c4.proj.weight', 'linear_c1.proj.bias', 'linear_fuse._conv.weight',
                 'linear_fuse._batch_norm.weight', 'linear_pred.weight'):
        grad = dict(model.named_parameters())[name].grad
        assert grad is not None and float(grad.abs().sum()) > 0, name


def test_mix_ffn_map_form_equals_token_form():
    """The exported programs' Mix-FFN (fc1/fc2 as 1x1 convs on the map) gives the token form's values, on a size
    that is not square."""
    paddle.seed(5)
    model = MixVisionTransformer_B0(drop_path_rate=0.0)
    perturb(model.state_dict(), seed=6)
    model.eval()
    ffn = model.block2[1].mlp
    h, w = 5, 7
    x = paddle.randn([2, h * w, 64])
    map_form = deploy_form(ffn, DeployTarget(program='legacy'))
    assert isinstance(map_form, MixFFNMapForm)
    with paddle.no_grad():
        want, got = ffn(x, h, w).numpy(), map_form(x, h, w).numpy()
    assert got.shape == want.shape == (2, h * w, 64)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * np.abs(want).max())


def test_export_free_size_and_infer_with_onednn(tmp_path):
    """Exported once with a free input size; infer.py with oneDNN on a 72x120 image (neither the export check's
    64x96 nor a multiple of 32) matches the dynamic graph."""
    paddle.seed(0)
    model = SegFormer_B0(num_classes=5, embedding_dim=64)
    perturb(model.state_dict(), seed=5)
    export_and_infer(model, tmp_path, size=(72, 120))


def _torch_and_transformers():
    try:
        import torch
        import transformers
    except ImportError as err:
        pytest.skip(f"needs torch==2.13.0 and transformers==4.57.6 for the reference: {err}")
    return torch, transformers


@pytest.mark.parametrize('suffix', ['.safetensors', '.bin'])
def test_parity_with_transformers_segformer(tmp_path, suffix):
    """random-init HF SegFormer-B0 (values perturbed) -> save -> convert -> logits agree with HF's, upsampled from
    1/4 resolution the way our model does (bilinear, half-pixel)."""
    torch, transformers = _torch_and_transformers()
    torch.manual_seed(0)
    reference = transformers.SegformerForSemanticSegmentation(transformers.SegformerConfig(num_labels=7)).eval()
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, tensor in list(reference.state_dict().items()):
            if name.endswith('running_var'):
                tensor.uniform_(0.5, 1.5, generator=gen)
            elif tensor.is_floating_point():
                tensor.add_(torch.empty_like(tensor).uniform_(-0.1, 0.1, generator=gen))
    path = tmp_path / f'segformer{suffix}'
    if suffix == '.safetensors':
        from safetensors.torch import save_file
        save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(path))
    else:
        torch.save(reference.state_dict(), str(path))
    info = convert_weights.convert('SegFormer_B0', 'hf', str(path), str(tmp_path / 'b0.pdparams'))
    assert info['kwargs'] == {'num_classes': 7, 'embedding_dim': 256, 'block_eps': 1e-6, 'stage_eps': 1e-5,
                              'embed_eps': 1e-5}
    ours = SegFormer_B0(**info['kwargs'], pretrained=str(tmp_path / 'b0.pdparams'))
    ours.eval()
    for shape in ([2, 3, 64, 64], [1, 3, 48, 80]):
        x = np.random.RandomState(2).randn(*shape).astype('float32')
        with torch.no_grad():
            quarter = reference(torch.from_numpy(x)).logits
            want = torch.nn.functional.interpolate(quarter, size=shape[2:], mode='bilinear',
                                                   align_corners=False).numpy()
        got = ours(paddle.to_tensor(x))[0].numpy()
        assert got.shape == want.shape
        assert float(np.abs(want).max()) > 0.5
        assert float(np.abs(got - want).max()) <= 1e-4 * float(np.abs(want).max())

    # the backbone alone from the same file (SegformerForSemanticSegmentation -> MiT)
    info = convert_weights.convert('MixVisionTransformer_B0', 'hf', str(path), str(tmp_path / 'mit.pdparams'))
    assert info['kwargs'] == {'block_eps': 1e-6, 'stage_eps': 1e-5, 'embed_eps': 1e-5}
    MixVisionTransformer_B0(**info['kwargs'], pretrained=str(tmp_path / 'mit.pdparams'))


def test_hf_safetensors_converts_without_torch_and_refuses_wrong_sizes(tmp_path):
    """An HF-layout file written with safetensors' numpy API converts in a subprocess where torch cannot be
    imported; a B0 file given for B2 is refused in one line."""
    save_file = pytest.importorskip('safetensors.numpy', reason='needs safetensors').save_file
    paddle.seed(0)
    source = SegFormer_B0(num_classes=3)
    perturb(source.state_dict(), seed=6)
    hf = {}
    for key, value in source.state_dict().items():
        value = value.numpy()
        m = key.split('.')
        if key.startswith('backbone.'):
            continue
        hf_key = {'linear_fuse._conv.weight': 'decode_head.linear_fuse.weight',
                  'linear_pred.weight': 'decode_head.classifier.weight',
                  'linear_pred.bias': 'decode_head.classifier.bias'}.get(key)
        if key.startswith('linear_c'):
            hf_key = f'decode_head.linear_c.{int(m[0][-1]) - 1}.proj.{m[2]}'
            value = value.T if m[2] == 'weight' else value
        if key.startswith('linear_fuse._batch_norm.'):
            stat = {'_mean': 'running_mean', '_variance': 'running_var'}.get(m[2], m[2])
            hf_key = f'decode_head.batch_norm.{stat}'
        hf[hf_key] = np.ascontiguousarray(value)
    backbone = source.backbone.state_dict()
    for i in range(4):
        for part, ours in (('proj', 'proj'), ('layer_norm', 'norm')):
            for kind in ('weight', 'bias'):
                hf[f'segformer.encoder.patch_embeddings.{i}.{part}.{kind}'] = \
                    backbone[f'patch_embed{i + 1}.{ours}.{kind}'].numpy()
        for kind in ('weight', 'bias'):
            hf[f'segformer.encoder.layer_norm.{i}.{kind}'] = backbone[f'norm{i + 1}.{kind}'].numpy()
        for j in range(2):
            p, q = f'block{i + 1}.{j}.', f'segformer.encoder.block.{i}.{j}.'
            for ours, theirs, transpose in (('norm1', 'layer_norm_1', False), ('norm2', 'layer_norm_2', False),
                                            ('attn.q', 'attention.self.query', True),
                                            ('attn.proj', 'attention.output.dense', True),
                                            ('mlp.fc1', 'mlp.dense1', True), ('mlp.fc2', 'mlp.dense2', True),
                                            ('mlp.dwconv.dwconv', 'mlp.dwconv.dwconv', False),
                                            ('attn.sr', 'attention.self.sr', False),
                                            ('attn.norm', 'attention.self.layer_norm', False)):
                for kind in ('weight', 'bias'):
                    if p + f'{ours}.{kind}' in backbone:
                        v = backbone[p + f'{ours}.{kind}'].numpy()
                        hf[q + f'{theirs}.{kind}'] = np.ascontiguousarray(v.T if transpose and kind == 'weight'
                                                                          else v)
            kv_w, kv_b = backbone[p + 'attn.kv.weight'].numpy(), backbone[p + 'attn.kv.bias'].numpy()
            c = kv_b.shape[0] // 2
            hf[q + 'attention.self.key.weight'] = np.ascontiguousarray(kv_w[:, :c].T)
            hf[q + 'attention.self.value.weight'] = np.ascontiguousarray(kv_w[:, c:].T)
            hf[q + 'attention.self.key.bias'] = kv_b[:c]
            hf[q + 'attention.self.value.bias'] = kv_b[c:]
    save_file(hf, str(tmp_path / 'model.safetensors'))
    code = ("import sys\n"
            "class NoTorch:\n"  # any `import torch` now raises ImportError
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name.split('.')[0] == 'torch':\n"
            "            raise ImportError('torch is blocked in this test')\n"
            "sys.meta_path.insert(0, NoTorch())\n"
            "sys.argv = ['convert_weights.py', '--arch', 'SegFormer_B0', '--format', 'hf', '--input', sys.argv[1],"
            " '--output', sys.argv[2]]\n"
            f"sys.path.insert(0, {os.path.join(REPO, 'tools')!r})\n"
            "import runpy; runpy.run_path(sys.path[0] + '/convert_weights.py', run_name='__main__')\n")
    result = subprocess.run([sys.executable, '-c', code, str(tmp_path / 'model.safetensors'),
                             str(tmp_path / 'b0.pdparams')], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert result.returncode == 0, result.stderr
    target = SegFormer_B0(num_classes=3, block_eps=1e-6, stage_eps=1e-5, embed_eps=1e-5)
    target.set_state_dict(paddle.load(str(tmp_path / 'b0.pdparams')))
    for key, value in source.state_dict().items():
        np.testing.assert_array_equal(target.state_dict()[key].numpy(), value.numpy())

    with pytest.raises(UserError) as err:
        convert_weights.convert('SegFormer_B2', 'hf', str(tmp_path / 'model.safetensors'), str(tmp_path / 'x.pdparams'))
    assert str(err.value) == "HuggingFace checkpoint is SegFormer_B0, not SegFormer_B2"


def _mmseg_mit_state(state, depths=(2, 2, 2, 2)):
    """mmseg's MiT names for the tensors of our MiT ``state`` (written from mmseg's layout: ``backbone.layers.{i}.0.
    projection``, ``nn.MultiheadAttention`` in_proj q|k|v, conv FFN ``ffn.layers.{0,1,4}``, stage norm
    ``layers.{i}.2``)."""
    mm = {}
    for i in range(4):
        s = f'backbone.layers.{i}.'
        for kind in ('weight', 'bias'):
            mm[s + f'0.projection.{kind}'] = state[f'patch_embed{i + 1}.proj.{kind}']
            mm[s + f'0.norm.{kind}'] = state[f'patch_embed{i + 1}.norm.{kind}']
            mm[s + f'2.{kind}'] = state[f'norm{i + 1}.{kind}']
        for j in range(depths[i]):
            p, q = f'block{i + 1}.{j}.', s + f'1.{j}.'
            mm[q + 'attn.attn.in_proj_weight'] = np.concatenate([state[p + 'attn.q.weight'].T,
                                                                 state[p + 'attn.kv.weight'].T], 0)
            mm[q + 'attn.attn.in_proj_bias'] = np.concatenate([state[p + 'attn.q.bias'], state[p + 'attn.kv.bias']])
            mm[q + 'attn.attn.out_proj.weight'] = state[p + 'attn.proj.weight'].T
            mm[q + 'attn.attn.out_proj.bias'] = state[p + 'attn.proj.bias']
            for kind in ('weight', 'bias'):
                mm[q + f'norm1.{kind}'] = state[p + f'norm1.{kind}']
                mm[q + f'norm2.{kind}'] = state[p + f'norm2.{kind}']
                if p + f'attn.sr.{kind}' in state:
                    mm[q + f'attn.sr.{kind}'] = state[p + f'attn.sr.{kind}']
                    mm[q + f'attn.norm.{kind}'] = state[p + f'attn.norm.{kind}']
                mm[q + f'ffn.layers.1.{kind}'] = state[p + f'mlp.dwconv.dwconv.{kind}']
            mm[q + 'ffn.layers.0.weight'] = state[p + 'mlp.fc1.weight'].T[:, :, None, None]
            mm[q + 'ffn.layers.0.bias'] = state[p + 'mlp.fc1.bias']
            mm[q + 'ffn.layers.4.weight'] = state[p + 'mlp.fc2.weight'].T[:, :, None, None]
            mm[q + 'ffn.layers.4.bias'] = state[p + 'mlp.fc2.bias']
    return mm


def test_mmseg_mit_layout_converts(tmp_path):
    """mmseg's MiT names convert onto the same backbone."""
    paddle.seed(0)
    source = MixVisionTransformer_B0()
    perturb(source.state_dict(), seed=7)
    state = {k: v.numpy() for k, v in source.state_dict().items()}
    mm = _mmseg_mit_state(state)
    mm['decode_head.conv_seg.weight'] = np.zeros([3, 256, 1, 1], 'float32')  # ignored (a different head)
    from safetensors.numpy import save_file
    save_file({k: np.ascontiguousarray(v) for k, v in mm.items()}, str(tmp_path / 'mm.safetensors'))
    info = convert_weights.convert('MixVisionTransformer_B0', 'mmseg', str(tmp_path / 'mm.safetensors'),
                                   str(tmp_path / 'mit.pdparams'))
    assert info['kwargs'] == {'block_eps': 1e-6, 'stage_eps': 1e-6, 'embed_eps': 1e-6}
    target = MixVisionTransformer_B0(pretrained=str(tmp_path / 'mit.pdparams'))
    for key, value in state.items():
        np.testing.assert_array_equal(target.state_dict()[key].numpy(), value)


def _mmseg_head_reference(feats, head, size, eps=1e-5):
    """mmseg's SegformerHead + EncoderDecoder resize, assembled by hand in numpy from mmseg-named tensors (eval):
    ConvModule(1x1 conv without bias, BN, ReLU) per level, bilinear upsampling to c1's size, concat c1..c4,
    fusion ConvModule, conv_seg, bilinear upsampling to the input ``size``."""
    def conv_bn_relu(x, prefix):
        y = np.einsum('oc,nchw->nohw', head[prefix + 'conv.weight'][:, :, 0, 0], x)
        scale = head[prefix + 'bn.weight'] / np.sqrt(head[prefix + 'bn.running_var'] + eps)
        shift = head[prefix + 'bn.bias'] - head[prefix + 'bn.running_mean'] * scale
        return np.maximum(y * scale[None, :, None, None] + shift[None, :, None, None], 0)

    def up(x, hw):
        return F.interpolate(paddle.to_tensor(x.astype('float32')), size=list(hw), mode='bilinear',
                             align_corners=False).numpy()

    hw = feats[0].shape[2:]
    levels = [up(conv_bn_relu(f, f'decode_head.convs.{i}.'), hw) for i, f in enumerate(feats)]
    y = conv_bn_relu(np.concatenate(levels, axis=1), 'decode_head.fusion_conv.')
    logits = np.einsum('oc,nchw->nohw', head['decode_head.conv_seg.weight'][:, :, 0, 0], y)
    return up(logits + head['decode_head.conv_seg.bias'][None, :, None, None], size)


def test_mmseg_segformer_checkpoint_converts_with_mmseg_head(tmp_path):
    """A whole mmseg SegFormer-B0 checkpoint (MiT + SegformerHead: ``decode_head.convs.{i}.{conv,bn}``,
    ``fusion_conv.{conv,bn}``, ``conv_seg``) converts with --format mmseg; the model built from the returned
    arguments (head_style='mmseg') reproduces a numpy forward of mmseg's head written from mmseg's key names."""
    from safetensors.numpy import save_file

    paddle.seed(1)
    backbone = MixVisionTransformer_B0(block_eps=1e-6, stage_eps=1e-6, embed_eps=1e-6)
    perturb(backbone.state_dict(), seed=8)
    backbone.eval()
    mm = _mmseg_mit_state({k: v.numpy() for k, v in backbone.state_dict().items()})
    rng = np.random.RandomState(9)
    head = {}
    for prefix, cin in [(f'decode_head.convs.{i}.', c) for i, c in enumerate([32, 64, 160, 256])] + \
            [('decode_head.fusion_conv.', 4 * 256)]:
        head[prefix + 'conv.weight'] = rng.uniform(-0.2, 0.2, [256, cin, 1, 1]) / np.sqrt(cin / 32)
        head[prefix + 'bn.weight'] = rng.uniform(0.5, 1.5, [256])
        head[prefix + 'bn.bias'] = rng.uniform(-0.2, 0.2, [256])
        head[prefix + 'bn.running_mean'] = rng.uniform(-0.2, 0.2, [256])
        head[prefix + 'bn.running_var'] = rng.uniform(0.5, 1.5, [256])
        head[prefix + 'bn.num_batches_tracked'] = np.array(100, 'int64')
    head['decode_head.conv_seg.weight'] = rng.uniform(-0.2, 0.2, [7, 256, 1, 1])
    head['decode_head.conv_seg.bias'] = rng.uniform(-0.2, 0.2, [7])
    head = {k: v.astype('float32') if v.dtype != np.int64 else v for k, v in head.items()}
    save_file({k: np.ascontiguousarray(v) for k, v in dict(mm, **head).items()}, str(tmp_path / 'mm.safetensors'))

    info = convert_weights.convert('SegFormer_B0', 'mmseg', str(tmp_path / 'mm.safetensors'),
                                   str(tmp_path / 'segformer.pdparams'))
    assert info['kwargs'] == {'num_classes': 7, 'embedding_dim': 256, 'head_style': 'mmseg', 'block_eps': 1e-6,
                              'stage_eps': 1e-6, 'embed_eps': 1e-6}
    model = SegFormer_B0(pretrained=str(tmp_path / 'segformer.pdparams'), **info['kwargs'])
    model.eval()
    x = paddle.to_tensor(np.random.RandomState(2).randn(1, 3, 64, 96).astype('float32'))
    with paddle.no_grad():
        feats = [f.numpy() for f in model.backbone(x)]
        out = model(x)[0].numpy()
        np.testing.assert_array_equal(feats[0], backbone(x)[0].numpy())  # the backbone converted exactly
    want = _mmseg_head_reference(feats, head, (64, 96))
    assert out.shape == (1, 7, 64, 96) and want.std() > 0.1
    np.testing.assert_allclose(out, want, rtol=0, atol=1e-4)

    # a different size, and a head that is not SegformerHead, are refused with one line
    with pytest.raises(UserError, match=r'^mmseg checkpoint is SegFormer_B0, not SegFormer_B1$'):
        convert_weights.convert('SegFormer_B1', 'mmseg', str(tmp_path / 'mm.safetensors'),
                                str(tmp_path / 'b1.pdparams'))
    save_file({k: np.ascontiguousarray(v) for k, v in mm.items()}, str(tmp_path / 'bare.safetensors'))
    with pytest.raises(UserError, match=r'^mmseg checkpoint has no decode_head\.conv_seg\.weight: not a SegFormer'):
        convert_weights.convert('SegFormer_B0', 'mmseg', str(tmp_path / 'bare.safetensors'),
                                str(tmp_path / 'x.pdparams'))
    with pytest.raises(UserError, match=r"^SegFormer: head_style must be one of 'mlp', 'mmseg', got 'MLP'$"):
        SegFormer(3, MixVisionTransformer(depths=[1, 1, 1, 1]), head_style='MLP')


def test_camvid_config_builds():
    from paddle_models.core.config import Builder, load_config

    builder = Builder(load_config(os.path.join(REPO, 'configs', 'segformer_b0_camvid.yml')))
    model = builder.model()
    assert isinstance(model, SegFormer) and isinstance(model.backbone, MixVisionTransformer)
    assert model.backbone.feat_channels == [32, 64, 160, 256] and model.embedding_dim == 256
    model.eval()
    assert model(paddle.randn([1, 3, 64, 64]))[0].shape == [1, 11, 64, 64]


def test_bad_arguments_raise_user_errors():
    cases = [
        (lambda: MixVisionTransformer(depths=[2, 2, 2]),
         "MixVisionTransformer: depths must be a list of 4 integers >= 1, got [2, 2, 2]"),
        (lambda: MixVisionTransformer(embed_dims=[32, 64, 160, 250]),
         "MixVisionTransformer: width 250 is not divisible by num_heads 8"),
        (lambda: MixVisionTransformer(drop_path_rate=1.0),
         "MixVisionTransformer: drop_path_rate must be a number in [0, 1), got 1.0"),
        (lambda: SegFormer(0, MixVisionTransformer(depths=[1, 1, 1, 1])),
         "SegFormer: num_classes must be an integer >= 1, got 0"),
    ]
    for build, message in cases:
        with pytest.raises(UserError) as err:
            build()
        assert str(err.value) == message
