"""The CNN-family configs: each builds the documented model (type, backbone, options, parameter count) with one loss
entry per training output, and trains from the command line (train.py) on camvid_mini -- one iteration with small
crops, the heaviest layers narrowed through --opts so that CI stays fast."""
import os

import numpy as np
import paddle
import pytest

from conftest import REPO
import paddle_models  # noqa: F401  (registers our components)
import train as train_tool
from paddle_models.backbones.resnet import ResNet
from paddle_models.backbones.resnet_vd import ResNet_vd
from paddle_models.core.config import Builder, load_config

# config: (model type, trainable parameters as configured, checks of the built model, --opts that narrow it)
CONFIGS = {
    'pspnet.yml': ('PSPNet', 67853686,
                   lambda m: isinstance(m.backbone, ResNet_vd) and m.backbone.layers == 50
                   and m.backbone.output_stride == 8 and m.head.psp_module.bin_sizes == [1, 2, 3, 6]
                   and m.head.enable_auxiliary_loss,
                   ['model.pp_out_channels=32']),
    'deeplabv3.yml': ('DeepLabV3', 39066475,
                      lambda m: m.backbone.output_stride == 8 and m.backbone.multi_grid == (1, 2, 4)
                      and m.aspp_ratios == (1, 12, 24, 36) and m.head.aspp.image_pooling,
                      ['model.aspp_out_channels=16']),
    'deeplabv3_os16.yml': ('DeepLabV3', 39066475,
                           lambda m: m.backbone.output_stride == 16 and m.aspp_ratios == (1, 6, 12, 18),
                           ['model.aspp_out_channels=16']),
    'unet_plusplus.yml': ('UNetPlusPlus', 8362764, lambda m: m.is_ds and m.ds_outputs and m.prune_level is None,
                          []),
    'unet_3plus.yml': ('UNet3Plus', 27199097, lambda m: m.is_deepsup and m.is_CGM,
                       ['model.filters=[8,8,16,16,32]']),
    'linknet.yml': ('LinkNet', 11534603, lambda m: isinstance(m.backbone, ResNet) and m.backbone.layers == 18, []),
}


def _config(name):
    return os.path.join(REPO, 'configs', name)


@pytest.mark.parametrize('name', sorted(CONFIGS))
def test_config_builds_the_documented_model(name):
    model_type, params, check, _ = CONFIGS[name]
    builder = Builder(load_config(_config(name), require=('model', 'train_dataset', 'loss')))
    model = builder.model()
    assert type(model).__name__ == model_type
    assert type(model).__module__.startswith('paddle_models.models.')
    assert check(model)
    assert model.num_classes == 11
    assert sum(int(np.prod(p.shape)) for p in model.parameters() if not p.stop_gradient) == params
    # one loss coefficient per output of the model in training mode (the auxiliary heads, deep supervision and
    # classification branches only run there): train.py stops at the first step otherwise
    model.train()
    with paddle.no_grad():
        outputs = model(paddle.to_tensor(np.random.RandomState(0).randn(2, 3, 64, 64).astype('float32')))
    assert len(outputs) == len(builder.losses()['coef'])
    assert outputs[0].shape == [2, 11, 64, 64]  # the main prediction, compared with the label map


def test_unet_3plus_config_is_the_full_recipe():
    losses = Builder(load_config(_config('unet_3plus.yml'))).losses()
    hybrid = losses['types'][:5]
    assert all(type(loss).__name__ == 'MixedLoss' for loss in hybrid)
    assert all([type(part).__name__ for part in loss.losses] == ['FocalLoss', 'MSSSIMLoss', 'IoULoss']
               for loss in hybrid)
    assert type(losses['types'][5]).__name__ == 'ForegroundBCELoss'


@pytest.mark.parametrize('name', sorted(CONFIGS))
def test_config_trains_from_the_command_line(name, camvid, tmp_path, capsys):
    if not os.path.isfile(os.path.join(REPO, 'paddle_models', 'losses', 'cross_entropy.py')):
        pytest.skip("paddle_models/losses/cross_entropy.py (our CrossEntropyLoss) is not in this tree yet; "
                    "PaddleSeg 2.8.0's fails on Paddle 3")
    save_dir = tmp_path / 'out'
    opts = [f'train_dataset.dataset_root={camvid}', 'train_dataset.transforms.1.crop_size=[32,32]'] + CONFIGS[name][3]
    train_tool.main(['--config', _config(name), '--iters', '1', '--batch_size', '2', '--log_iters', '1',
                     '--save_dir', str(save_dir), '--device', 'cpu', '--seed', '0', '--opts', *opts])
    log = capsys.readouterr()
    lines = [line for line in (log.out + log.err).splitlines() if '[TRAIN]' in line and 'iter: 1/1' in line]
    assert lines, (log.out + log.err)[-2000:]
    loss = float(lines[-1].split('loss: ')[1].split(',')[0])
    assert np.isfinite(loss) and loss > 0
    assert os.path.getsize(save_dir / 'iter_1' / 'model.pdparams') > 0
