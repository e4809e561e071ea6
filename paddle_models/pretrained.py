"""PaddleSeg's published trained checkpoints for our models, by name.

PaddleSeg 2.8.0 publishes 28 trained checkpoints for the architectures of this zoo (20 Cityscapes, 8 Pascal VOC
``voc12aug``), each at ``https://.../<config name>/model.pdparams`` with its validation mIoU in the model folder's
README. Each entry here names one of them by PaddleSeg's config name (``segformer_b0_cityscapes_1024x1024_160k``, or
the short alias ``segformer_b0_cityscapes``) and carries the config that builds the architecture exactly as
PaddleSeg's config does (``paddle_models/configs/<name>.yml``, shipped in the package), so the checkpoint loads
strictly::

    import paddle_models as pm
    pm.list_pretrained()                                    # one dict per checkpoint
    seg = pm.Segmenter.from_pretrained('segformer_b0_cityscapes')
    model = pm.build_model('hardnet_cityscapes_1024x1024_160k', pretrained=True)

The weights are read through the one loader of ``paddle_models.weights`` (PaddleSeg's cache
``$SEG_HOME/pretrained_model/<config name>/model.pdparams``, progress bar, atomic, no code in the file runs), so a
checkpoint that PaddleSeg already downloaded is used with no network. A name is also accepted wherever a whole model's
``pretrained:`` is (fine-tuning: ``--opts model.pretrained=segformer_b0_cityscapes_1024x1024_160k``).
"""
import copy
import os
import re

import yaml

from paddle_models.errors import UserError

__all__ = ['list_pretrained', 'get_pretrained', 'is_pretrained_name', 'pretrained_weights']

CONFIG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'configs')
_README = 'https://github.com/PaddlePaddle/PaddleSeg/blob/release/2.8/configs/{folder}/README.md'

# (PaddleSeg config name, its configs/ folder, published single-scale val mIoU, checkpoint URL), in the order of
# PaddleSeg's model READMEs.
_PUBLISHED = (
    ('deeplabv3_resnet50_os8_cityscapes_1024x512_80k', 'deeplabv3', 0.7990, 'https://bj.bcebos.com/paddleseg/dygraph/cityscapes/deeplabv3_resnet50_os8_cityscapes_1024x512_80k/model.pdparams'),
    ('deeplabv3_resnet101_os8_cityscapes_1024x512_80k', 'deeplabv3', 0.8085, 'https://bj.bcebos.com/paddleseg/dygraph/cityscapes/deeplabv3_resnet101_os8_cityscapes_1024x512_80k/model.pdparams'),
    ('deeplabv3_resnet50_os8_voc12aug_512x512_40k', 'deeplabv3', 0.7976, 'https://bj.bcebos.com/paddleseg/dygraph/pascal_voc12/deeplabv3_resnet50_os8_voc12aug_512x512_40k/model.pdparams'),
    ('deeplabv3_resnet101_os8_voc12aug_512x512_40k', 'deeplabv3', 0.8062, 'https://bj.bcebos.com/paddleseg/dygraph/pascal_voc12/deeplabv3_resnet101_os8_voc12aug_512x512_40k/model.pdparams'),
    ('fcn_hrnetw18_cityscapes_1024x512_80k', 'fcn', 0.7897, 'https://bj.bcebos.com/paddleseg/dygraph/cityscapes/fcn_hrnetw18_cityscapes_1024x512_80k/model.pdparams'),
    ('fcn_hrnetw48_cityscapes_1024x512_80k', 'fcn', 0.8070, 'https://bj.bcebos.com/paddleseg/dygraph/cityscapes/fcn_hrnetw48_cityscapes_1024x512_80k/model.pdparams'),
    ('fcn_hrnetw18_voc12aug_512x512_40k', 'fcn', 0.7539, 'https://bj.bcebos.com/paddleseg/dygraph/pascal_voc12/fcn_hrnetw18_voc12aug_512x512_40k/model.pdparams'),
    ('fcn_hrnetw48_voc12aug_512x512_40k', 'fcn', 0.7872, 'https://bj.bcebos.com/paddleseg/dygraph/pascal_voc12/fcn_hrnetw48_voc12aug_512x512_40k/model.pdparams'),
    ('hardnet_cityscapes_1024x1024_160k', 'hardnet', 0.7903, 'https://bj.bcebos.com/paddleseg/dygraph/cityscapes/hardnet_cityscapes_1024x1024_160k/model.pdparams'),
    ('mscale_ocrnet_hrnetv2_psa_cityscapes_1024x2048_150k', 'mscale_ocrnet', 0.8462, 'https://paddleseg.bj.bcebos.com/dygraph/cityscapes/mscale_ocrnet_hrnetv2_psa_cityscapes_1024x2048_150k/model.pdparams'),
    ('ocrnet_hrnetw18_cityscapes_1024x512_160k', 'ocrnet', 0.8067, 'https://bj.bcebos.com/paddleseg/dygraph/cityscapes/ocrnet_hrnetw18_cityscapes_1024x512_160k/model.pdparams'),
    ('ocrnet_hrnetw48_cityscapes_1024x512_160k', 'ocrnet', 0.8215, 'https://bj.bcebos.com/paddleseg/dygraph/cityscapes/ocrnet_hrnetw48_cityscapes_1024x512_160k/model.pdparams'),
    ('ocrnet_hrnetw18_voc12aug_512x512_40k', 'ocrnet', 0.7576, 'https://bj.bcebos.com/paddleseg/dygraph/pascal_voc12/ocrnet_hrnetw18_voc12aug_512x512_40k/model.pdparams'),
    ('ocrnet_hrnetw48_voc12aug_512x512_40k', 'ocrnet', 0.7998, 'https://bj.bcebos.com/paddleseg/dygraph/pascal_voc12/ocrnet_hrnetw48_voc12aug_512x512_40k/model.pdparams'),
    ('pspnet_resnet50_os8_cityscapes_1024x512_80k', 'pspnet', 0.7883, 'https://bj.bcebos.com/paddleseg/dygraph/cityscapes/pspnet_resnet50_os8_cityscapes_1024x512_80k/model.pdparams'),
    ('pspnet_resnet101_os8_cityscapes_1024x512_80k', 'pspnet', 0.8048, 'https://bj.bcebos.com/paddleseg/dygraph/cityscapes/pspnet_resnet101_os8_cityscapes_1024x512_80k/model.pdparams'),
    ('pspnet_resnet50_os8_voc12aug_512x512_40k', 'pspnet', 0.8076, 'https://bj.bcebos.com/paddleseg/dygraph/pascal_voc12/pspnet_resnet50_os8_voc12aug_512x512_40k/model.pdparams'),
    ('pspnet_resnet101_os8_voc12aug_512x512_40k', 'pspnet', 0.8022, 'https://bj.bcebos.com/paddleseg/dygraph/pascal_voc12/pspnet_resnet101_os8_voc12aug_512x512_40k/model.pdparams'),
    ('segformer_b0_cityscapes_1024x1024_160k', 'segformer', 0.7673, 'https://bj.bcebos.com/paddleseg/dygraph/cityscapes/segformer_b0_cityscapes_1024x1024_160k/model.pdparams'),
    ('segformer_b1_cityscapes_1024x1024_160k', 'segformer', 0.7835, 'https://bj.bcebos.com/paddleseg/dygraph/cityscapes/segformer_b1_cityscapes_1024x1024_160k/model.pdparams'),
    ('segformer_b2_cityscapes_1024x1024_160k', 'segformer', 0.8160, 'https://bj.bcebos.com/paddleseg/dygraph/cityscapes/segformer_b2_cityscapes_1024x1024_160k/model.pdparams'),
    ('segformer_b3_cityscapes_1024x1024_160k', 'segformer', 0.8247, 'https://bj.bcebos.com/paddleseg/dygraph/cityscapes/segformer_b3_cityscapes_1024x1024_160k/model.pdparams'),
    ('segformer_b4_cityscapes_1024x1024_160k', 'segformer', 0.8238, 'https://bj.bcebos.com/paddleseg/dygraph/cityscapes/segformer_b4_cityscapes_1024x1024_160k/model.pdparams'),
    ('segformer_b5_cityscapes_1024x1024_160k', 'segformer', 0.8258, 'https://bj.bcebos.com/paddleseg/dygraph/cityscapes/segformer_b5_cityscapes_1024x1024_160k/model.pdparams'),
    ('segnext_mscan_t_cityscapes_1024x1024_160k', 'segnext', 0.8104, 'https://paddleseg.bj.bcebos.com/dygraph/cityscapes/segnext_mscan_t_cityscapes_1024x1024_160k/model.pdparams'),
    ('segnext_mscan_s_cityscapes_1024x1024_160k', 'segnext', 0.8133, 'https://paddleseg.bj.bcebos.com/dygraph/cityscapes/segnext_mscan_s_cityscapes_1024x1024_160k/model.pdparams'),
    ('segnext_mscan_b_cityscapes_1024x1024_160k', 'segnext', 0.8274, 'https://paddleseg.bj.bcebos.com/dygraph/cityscapes/segnext_mscan_b_cityscapes_1024x1024_160k/model.pdparams'),
    ('segnext_mscan_l_cityscapes_1024x1024_160k', 'segnext', 0.8332, 'https://paddleseg.bj.bcebos.com/dygraph/cityscapes/segnext_mscan_l_cityscapes_1024x1024_160k/model.pdparams'),
)


def _alias(name):
    """The short name of a checkpoint: its config name less the training size and schedule
    (``segformer_b0_cityscapes_1024x1024_160k`` -> ``segformer_b0_cityscapes``)."""
    return re.sub(r'_\d+x\d+_\d+k$', '', name)


def _entry(name, folder, miou, url):
    from paddle_models.core.visualize import dataset_info  # lazy: the registry is importable without paddle

    config = os.path.join(CONFIG_DIR, f'{name}.yml')
    with open(config, encoding='utf-8') as f:
        dic = yaml.safe_load(f)
    dataset = dic['val_dataset']['type']
    num_classes = dic['model']['num_classes']
    palette, names = dataset_info(dataset)
    return {
        'name': name,
        'alias': _alias(name),
        'url': url,
        'dataset': dataset,
        'num_classes': num_classes,
        'class_names': list(names) if names else [f'class {i}' for i in range(num_classes)],
        'palette': [list(c) for c in palette] if palette else None,
        'miou': miou,
        'source': f"PaddleSeg 2.8.0 model table, single-scale val mIoU: {_README.format(folder=folder)}",
        'model': dic['model']['type'],
        'config': config,
    }


_ENTRIES = None


def _entries():
    global _ENTRIES
    if _ENTRIES is None:
        entries = {}
        for row in _PUBLISHED:
            entry = _entry(*row)
            entries[entry['name']] = entry
        _ENTRIES = entries
    return _ENTRIES


def _by_name():
    """{name or alias: entry}."""
    table = {}
    for entry in _entries().values():
        table[entry['name']] = entry
        table[entry['alias']] = entry
    return table


def list_pretrained(dataset=None, model=None):
    """The published trained checkpoints.

    Args:
        dataset (str, optional): Only those trained on this dataset (``'Cityscapes'``, ``'PascalVOC'``).
        model (str, optional): Only those of this registered model type (``'SegFormer'``, ``'OCRNet'``).

    Returns:
        list[dict]: One dict per checkpoint (copies), with ``name`` (PaddleSeg's config name), ``alias`` (the short
        name), ``url``, ``dataset``, ``num_classes``, ``class_names``, ``palette`` (RGB per class), ``miou`` (the
        published single-scale val mIoU as a fraction), ``source`` (where that figure is published), ``model`` (the
        model type) and ``config`` (the packaged YAML that builds the architecture).
    """
    return [copy.deepcopy(e) for e in _entries().values()
            if (dataset is None or e['dataset'] == dataset) and (model is None or e['model'] == model)]


def is_pretrained_name(value):
    """True when ``value`` is the name or alias of a published checkpoint."""
    return isinstance(value, str) and value in _by_name()


def get_pretrained(name):
    """The registry entry of checkpoint ``name`` (config name or alias), as ``list_pretrained`` gives it.

    Raises:
        UserError: ``name`` is no published checkpoint (with the closest names).
    """
    table = _by_name()
    if not is_pretrained_name(name):
        from paddle_models.utils.validate import did_you_mean
        raise UserError(f"no trained checkpoint named {name!r}{did_you_mean(str(name), table)} "
                        f"(paddle_models.list_pretrained() lists them)")
    return copy.deepcopy(table[name])


def pretrained_weights(name):
    """The local ``model.pdparams`` of checkpoint ``name``: PaddleSeg's cache file, downloaded there first when
    missing (``paddle_models.weights.resolve_pretrained``; offline, the error names the URL and the cache path)."""
    from paddle_models.weights import resolve_pretrained
    return resolve_pretrained(get_pretrained(name)['url'])

