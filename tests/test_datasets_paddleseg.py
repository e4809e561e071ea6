"""PaddleSeg's named datasets, ours: the same samples as PaddleSeg 2.8.0's classes on the same folders, and a missing
root, folder or list file named in one line (PaddleSeg says "The dataset is not Found ..." or starts a download)."""
import os
import subprocess
import sys

import numpy as np
import pytest

import paddleseg.datasets as ps_datasets
import paddleseg.transforms as T
from paddleseg.cvlibs import manager

from conftest import REPO
from dataset_layouts import make_ade20k, make_cityscapes, make_list_layout, make_voc
import paddle_models  # noqa: F401  (registers our components)
from paddle_models.datasets import ADE20K, Cityscapes, MiniDeepGlobeRoadExtraction, PascalVOC, PPHumanSeg14K
from paddle_models.errors import UserError

pytestmark = pytest.mark.paddle26  # CI runs these on Paddle 2.6.2 too

# (ours, PaddleSeg's, layout builder, modes)
CASES = {
    'Cityscapes': (Cityscapes, ps_datasets.Cityscapes, make_cityscapes, ('train', 'val')),
    'ADE20K': (ADE20K, ps_datasets.ADE20K, make_ade20k, ('train', 'val')),
    'PascalVOC': (PascalVOC, ps_datasets.PascalVOC, make_voc, ('train', 'val', 'trainval', 'trainaug')),
    'PPHumanSeg14K': (PPHumanSeg14K, ps_datasets.PPHumanSeg14K,
                      lambda root, camvid: make_list_layout(root, camvid, ' '), ('train', 'val')),
    'MiniDeepGlobeRoadExtraction': (MiniDeepGlobeRoadExtraction, ps_datasets.MiniDeepGlobeRoadExtraction,
                                    lambda root, camvid: make_list_layout(root, camvid, '|'), ('train', 'val')),
}


def _transforms():
    return [T.Normalize()]


@pytest.mark.parametrize('name', sorted(CASES))
def test_registered_under_paddleseg_name(name):
    assert manager.DATASETS.components_dict[name] is CASES[name][0]


@pytest.mark.parametrize('name', sorted(CASES))
def test_same_samples_as_paddleseg(name, camvid, tmp_path):
    ours_cls, theirs_cls, build, modes = CASES[name]
    root = build(str(tmp_path / name), camvid)
    for mode in modes:
        ours = ours_cls(transforms=_transforms(), dataset_root=root, mode=mode)
        theirs = theirs_cls(transforms=_transforms(), dataset_root=root, mode=mode)
        assert sorted(map(tuple, ours.file_list)) == sorted(map(tuple, theirs.file_list)), mode
        assert ours.num_classes == theirs.num_classes and ours.ignore_index == theirs.ignore_index
        assert len(ours) >= 1
        order = {tuple(p): i for i, p in enumerate(theirs.file_list)}
        for i, pair in enumerate(ours.file_list):
            a, b = ours[i], theirs[order[tuple(pair)]]
            np.testing.assert_allclose(a['img'], b['img'], atol=1e-6)
            np.testing.assert_array_equal(np.asarray(a['label']), np.asarray(b['label']))


def test_ade20k_moves_classes_down_and_ignores_zero(camvid, tmp_path):
    root = make_ade20k(str(tmp_path / 'ade'), camvid, counts=(1, 1))
    sample = ADE20K(transforms=_transforms(), dataset_root=root, mode='train')[0]
    from PIL import Image
    raw = np.asarray(Image.open(ADE20K(transforms=_transforms(), dataset_root=root).file_list[0][1]))
    label = np.asarray(sample['label'])
    assert np.array_equal(label[raw == 0], np.full((raw == 0).sum(), 255))
    assert np.array_equal(label[raw > 0], raw[raw > 0] - 1)


MISSING_ROOT = {
    'Cityscapes': "Cityscapes: dataset_root not found: {root} (expected leftImg8bit/<mode>/<city>/*_leftImg8bit.png "
                  "and gtFine/<mode>/<city>/*_gtFine_labelTrainIds.png)",
    'ADE20K': "ADE20K: dataset_root not found: {root} (expected images/{{training,validation}}/*.jpg and "
              "annotations/{{training,validation}}/*.png)",
    'PascalVOC': "PascalVOC: dataset_root not found: {root} (expected VOC2012/ImageSets/Segmentation/<mode>.txt, "
                 "VOC2012/JPEGImages, VOC2012/SegmentationClass)",
    'PPHumanSeg14K': "PPHumanSeg14K: dataset_root not found: {root} (expected train.txt / val.txt / test.txt listing "
                     "'image label' relative to dataset_root)",
    'MiniDeepGlobeRoadExtraction': "MiniDeepGlobeRoadExtraction: dataset_root not found: {root} (expected train.txt "
                                   "/ val.txt listing 'image|label' relative to dataset_root)",
}


@pytest.mark.parametrize('name', sorted(CASES))
def test_missing_root_names_the_path_and_downloads_nothing(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    root = str(tmp_path / 'data' / 'nowhere')
    with pytest.raises(UserError) as err:
        CASES[name][0](transforms=_transforms(), dataset_root=root, mode='train')
    assert str(err.value) == MISSING_ROOT[name].format(root=root)
    assert os.listdir(tmp_path) == []  # nothing downloaded or created


@pytest.mark.parametrize('name,remove,message', [
    ('Cityscapes', 'gtFine/val', "Cityscapes: folder not found: {root}/gtFine/val (expected leftImg8bit/<mode>/"
                                 "<city>/*_leftImg8bit.png and gtFine/<mode>/<city>/*_gtFine_labelTrainIds.png)"),
    ('Cityscapes', 'gtFine/val/camvid/camvid_000000_000019_gtFine_labelTrainIds.png',
     "Cityscapes: label of {root}/leftImg8bit/val/camvid/camvid_000000_000019_leftImg8bit.png not found: "
     "{root}/gtFine/val/camvid/camvid_000000_000019_gtFine_labelTrainIds.png"),
    ('ADE20K', 'annotations/validation', "ADE20K: folder not found: {root}/annotations/validation (expected "
                                         "images/{{training,validation}}/*.jpg and annotations/{{training,validation}}"
                                         "/*.png)"),
    ('PascalVOC', 'VOC2012/ImageSets/Segmentation/val.txt',
     "PascalVOC: list file not found: {root}/VOC2012/ImageSets/Segmentation/val.txt"),
    ('PPHumanSeg14K', 'val.txt', "PPHumanSeg14K: list file not found: {root}/val.txt"),
    ('MiniDeepGlobeRoadExtraction', 'val.txt', "MiniDeepGlobeRoadExtraction: list file not found: {root}/val.txt"),
])
def test_missing_folder_or_list_names_the_path(name, remove, message, camvid, tmp_path):
    import shutil
    root = CASES[name][2](str(tmp_path / name), camvid)
    target = os.path.join(root, remove)
    shutil.rmtree(target) if os.path.isdir(target) else os.remove(target)
    with pytest.raises(UserError) as err:
        CASES[name][0](transforms=_transforms(), dataset_root=root, mode='val')
    assert str(err.value) == message.format(root=root)


def test_voc_trainaug_needs_aug_list(camvid, tmp_path):
    root = make_voc(str(tmp_path / 'voc'), camvid)
    os.remove(os.path.join(root, 'VOC2012', 'ImageSets', 'Segmentation', 'aug.txt'))
    with pytest.raises(UserError, match=r"^PascalVOC: list file not found: .*/Segmentation/aug\.txt$"):
        PascalVOC(transforms=_transforms(), dataset_root=root, mode='trainaug')


def test_bad_mode_is_named():
    with pytest.raises(UserError) as err:
        ADE20K(transforms=_transforms(), dataset_root='.', mode='test')
    assert str(err.value) == "ADE20K: mode must be one of 'train', 'val', got 'test'"


def test_train_py_with_a_missing_cityscapes_root_exits_2_with_one_line(tmp_path):
    config = os.path.join(REPO, '..', 'shared', 'paddleseg-2.8.0-configs', 'configs', 'pspnet',
                          'pspnet_resnet50_os8_cityscapes_1024x512_80k.yml')
    if not os.path.isfile(config):
        from conftest import camvid_root
        camvid_root()  # the same skip/fail rule as camvid_mini: both live in ../shared
        pytest.skip(f"PaddleSeg's configs not found: {config}")
    proc = subprocess.run([sys.executable, os.path.join(REPO, 'train.py'), '--config', config, '--iters', '1', '--save_dir',
                           str(tmp_path / 'out'), '--device', 'cpu', '--opts', 'model.backbone.pretrained=None'],
                          cwd=str(tmp_path), capture_output=True, text=True, timeout=300,
                          env={**os.environ, 'PYTHONPATH': REPO})
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    # relative to the working directory, as in PaddleSeg; the absolute path it was looked for at is named too
    absolute = os.path.join(os.path.realpath(tmp_path), 'data', 'cityscapes')
    assert lines[-1] == (f"error: Cityscapes: dataset_root not found: data/cityscapes ({absolute}; expected "
                         "leftImg8bit/<mode>/<city>/*_leftImg8bit.png and gtFine/<mode>/<city>/"
                         "*_gtFine_labelTrainIds.png)")
    assert 'Traceback' not in proc.stderr
    assert not (tmp_path / 'out').exists()
