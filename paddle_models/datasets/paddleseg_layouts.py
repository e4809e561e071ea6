"""PaddleSeg's named datasets (Cityscapes, ADE20K, PascalVOC, PP-HumanSeg14K, MiniDeepGlobeRoadExtraction), read
from the folder layouts PaddleSeg documents, with the checks of :class:`~.list_dataset.Dataset`.

They are registered under PaddleSeg's names and take PaddleSeg's arguments, so PaddleSeg's own configs build them
unchanged.  Where PaddleSeg 2.8.0 answers a missing folder with "The dataset is not Found or the folder structure is
nonconfoumance." (or starts downloading ADE20K / Pascal VOC), these raise a one-line UserError naming the path that
is missing and the layout expected there; nothing is downloaded.  Samples are the same as PaddleSeg's: the same
image/label pairs (paired by name here, where PaddleSeg zips two sorted globs) and the same label values.
"""
import glob
import os

import numpy as np

from ..errors import UserError
from ..registry import register_dataset
from .list_dataset import Dataset, check_mode, not_found_error, read_list_file


def _require_dir(owner, path, layout):
    """Raise UserError naming ``path`` (and the layout expected) unless it is a directory."""
    if not os.path.isdir(path):
        raise not_found_error('folder', path, owner, expected=layout)
    return path


def _require_file(owner, path, what):
    if not os.path.isfile(path):
        raise not_found_error(what, path, owner)
    return path


class _NamedDataset(Dataset):
    """Shared set-up of the named datasets: fixed classes, checked root (named in the error with the class)."""
    NUM_CLASSES = None
    IGNORE_INDEX = 255
    IMG_CHANNELS = 3
    MODES = ('train', 'val', 'test')

    def _setup_named(self, mode, dataset_root, transforms, edge):
        """Check the arguments, set up the shared state and return (class name, lower-cased mode)."""
        name = type(self).__name__
        mode = check_mode(name, mode, self.MODES)
        if dataset_root is None or not os.path.isdir(str(dataset_root)):
            raise not_found_error('dataset_root', dataset_root, name, expected=self.LAYOUT)
        if transforms is None:
            raise UserError(f"{name}: transforms are required (a list of transforms)")
        # 'trainval' and 'trainaug' (Pascal VOC) load samples as 'train' does
        self._setup(mode if mode in ('val', 'test') else 'train', dataset_root, transforms, self.NUM_CLASSES,
                    self.IMG_CHANNELS, self.IGNORE_INDEX, edge)
        self.split = mode
        return name, mode


@register_dataset
class Cityscapes(_NamedDataset):
    """Cityscapes (19 train ids), PaddleSeg's layout.

    ``dataset_root/leftImg8bit/<mode>/<city>/*_leftImg8bit.png`` with labels
    ``dataset_root/gtFine/<mode>/<city>/*_gtFine_labelTrainIds.png`` (made by cityscapesScripts'
    ``createTrainIdLabelImgs`` or PaddleSeg's ``tools/data/convert_cityscapes.py``).

    Args:
        transforms (list): Transforms.
        dataset_root (str): The dataset folder.
        mode (str, optional): 'train', 'val' or 'test'. Default: 'train'.
        edge (bool, optional): In 'train' mode also return a binary edge map. Default: False.
    """
    NUM_CLASSES = 19
    LAYOUT = "leftImg8bit/<mode>/<city>/*_leftImg8bit.png and gtFine/<mode>/<city>/*_gtFine_labelTrainIds.png"
    # the 19 train ids in order, with cityscapesScripts' colours (labels.py)
    CLASSES = ('road', 'sidewalk', 'building', 'wall', 'fence', 'pole', 'traffic light', 'traffic sign',
               'vegetation', 'terrain', 'sky', 'person', 'rider', 'car', 'truck', 'bus', 'train', 'motorcycle',
               'bicycle')
    PALETTE = [[128, 64, 128], [244, 35, 232], [70, 70, 70], [102, 102, 156], [190, 153, 153], [153, 153, 153],
               [250, 170, 30], [220, 220, 0], [107, 142, 35], [152, 251, 152], [70, 130, 180], [220, 20, 60],
               [255, 0, 0], [0, 0, 142], [0, 0, 70], [0, 60, 100], [0, 80, 100], [0, 0, 230], [119, 11, 32]]

    def __init__(self, transforms, dataset_root, mode='train', edge=False):
        name, mode = self._setup_named(mode, dataset_root, transforms, edge)
        root = self.dataset_root
        image_dir = _require_dir(name, os.path.join(root, 'leftImg8bit', mode), self.LAYOUT)
        label_dir = _require_dir(name, os.path.join(root, 'gtFine', mode), self.LAYOUT)
        images = sorted(glob.glob(os.path.join(image_dir, '*', '*_leftImg8bit.png')))
        if not images:
            raise UserError(f"{name}: no images found: {os.path.join(image_dir, '*', '*_leftImg8bit.png')}")
        self.file_list = []
        for image in images:
            city = os.path.basename(os.path.dirname(image))
            stem = os.path.basename(image)[:-len('_leftImg8bit.png')]
            label = os.path.join(label_dir, city, stem + '_gtFine_labelTrainIds.png')
            self.file_list.append([image, _require_file(name, label, f"label of {image}")])


@register_dataset
class ADE20K(_NamedDataset):
    """ADE20K scene parsing (150 classes), PaddleSeg's layout of ``ADEChallengeData2016``.

    ``dataset_root/images/{training,validation}/*.jpg`` with labels
    ``dataset_root/annotations/{training,validation}/*.png``.  Label value 0 ("other") becomes the ignore index 255
    and every class id moves down by one, as in PaddleSeg.

    Args:
        transforms (list): Transforms.
        dataset_root (str): The ``ADEChallengeData2016`` folder (PaddleSeg would download it when None; we do not).
        mode (str, optional): 'train' or 'val'. Default: 'train'.
        edge (bool, optional): In 'train' mode also return a binary edge map. Default: False.
    """
    NUM_CLASSES = 150
    MODES = ('train', 'val')
    LAYOUT = "images/{training,validation}/*.jpg and annotations/{training,validation}/*.png"
    # the SceneParsing benchmark's 150 classes (objectInfo150, first name of each), ids after the shift below;
    # no PALETTE: the benchmark publishes none with the data, so PaddleSeg's default colours apply
    CLASSES = (
        'wall', 'building', 'sky', 'floor', 'tree', 'ceiling', 'road', 'bed', 'windowpane', 'grass', 'cabinet',
        'sidewalk', 'person', 'earth', 'door', 'table', 'mountain', 'plant', 'curtain', 'chair', 'car', 'water',
        'painting', 'sofa', 'shelf', 'house', 'sea', 'mirror', 'rug', 'field', 'armchair', 'seat', 'fence', 'desk',
        'rock', 'wardrobe', 'lamp', 'bathtub', 'railing', 'cushion', 'base', 'box', 'column', 'signboard',
        'chest of drawers', 'counter', 'sand', 'sink', 'skyscraper', 'fireplace', 'refrigerator', 'grandstand',
        'path', 'stairs', 'runway', 'case', 'pool table', 'pillow', 'screen door', 'stairway', 'river', 'bridge',
        'bookcase', 'blind', 'coffee table', 'toilet', 'flower', 'book', 'hill', 'bench', 'countertop', 'stove',
        'palm', 'kitchen island', 'computer', 'swivel chair', 'boat', 'bar', 'arcade machine', 'hovel', 'bus',
        'towel', 'light', 'truck', 'tower', 'chandelier', 'awning', 'streetlight', 'booth', 'television receiver',
        'airplane', 'dirt track', 'apparel', 'pole', 'land', 'bannister', 'escalator', 'ottoman', 'bottle',
        'buffet', 'poster', 'stage', 'van', 'ship', 'fountain', 'conveyer belt', 'canopy', 'washer', 'plaything',
        'swimming pool', 'stool', 'barrel', 'basket', 'waterfall', 'tent', 'bag', 'minibike', 'cradle', 'oven',
        'ball', 'food', 'step', 'tank', 'trade name', 'microwave', 'pot', 'animal', 'bicycle', 'lake', 'dishwasher',
        'screen', 'blanket', 'sculpture', 'hood', 'sconce', 'vase', 'traffic light', 'tray', 'ashcan', 'fan',
        'pier', 'crt screen', 'plate', 'monitor', 'bulletin board', 'shower', 'radiator', 'glass', 'clock', 'flag')
    # uint8 lookup table: 0 -> 255, k -> k - 1
    _SHIFT = ((np.arange(256) - 1) % 256).astype(np.uint8)

    def __init__(self, transforms, dataset_root=None, mode='train', edge=False):
        name, mode = self._setup_named(mode, dataset_root, transforms, edge)
        folder = 'training' if mode == 'train' else 'validation'
        image_dir = _require_dir(name, os.path.join(self.dataset_root, 'images', folder), self.LAYOUT)
        label_dir = _require_dir(name, os.path.join(self.dataset_root, 'annotations', folder), self.LAYOUT)
        images = sorted(f for f in os.listdir(image_dir) if f.lower().endswith('.jpg'))
        if not images:
            raise UserError(f"{name}: no .jpg images found in {image_dir}")
        self.file_list = [[os.path.join(image_dir, f),
                           _require_file(name, os.path.join(label_dir, f[:-4] + '.png'), 'label')] for f in images]

    def label_value_map(self, label_path):
        return self._SHIFT


@register_dataset
class PascalVOC(_NamedDataset):
    """Pascal VOC 2012 (21 classes), PaddleSeg's layout of ``VOCdevkit``.

    ``dataset_root/VOC2012/ImageSets/Segmentation/<mode>.txt`` names the samples; images are
    ``VOC2012/JPEGImages/<name>.jpg``, labels ``VOC2012/SegmentationClass/<name>.png``.  ``trainaug`` adds the
    names of ``aug.txt`` with labels from ``VOC2012/SegmentationClassAug`` (PaddleSeg's ``voc_augment.py``).

    Args:
        transforms (list): Transforms.
        dataset_root (str): The ``VOCdevkit`` folder (PaddleSeg would download it when None; we do not).
        mode (str, optional): 'train', 'trainval', 'trainaug' or 'val'. Default: 'train'.
        edge (bool, optional): In training modes also return a binary edge map. Default: False.
    """
    NUM_CLASSES = 21
    MODES = ('train', 'trainval', 'trainaug', 'val')
    LAYOUT = "VOC2012/ImageSets/Segmentation/<mode>.txt, VOC2012/JPEGImages, VOC2012/SegmentationClass"
    # VOC's class order and its devkit's colour map (label k: bits of k spread over the high bits of R, G, B)
    CLASSES = ('background', 'aeroplane', 'bicycle', 'bird', 'boat', 'bottle', 'bus', 'car', 'cat', 'chair', 'cow',
               'diningtable', 'dog', 'horse', 'motorbike', 'person', 'pottedplant', 'sheep', 'sofa', 'train',
               'tvmonitor')
    PALETTE = [[0, 0, 0], [128, 0, 0], [0, 128, 0], [128, 128, 0], [0, 0, 128], [128, 0, 128], [0, 128, 128],
               [128, 128, 128], [64, 0, 0], [192, 0, 0], [64, 128, 0], [192, 128, 0], [64, 0, 128], [192, 0, 128],
               [64, 128, 128], [192, 128, 128], [0, 64, 0], [128, 64, 0], [0, 192, 0], [128, 192, 0], [0, 64, 128]]

    def __init__(self, transforms, dataset_root=None, mode='train', edge=False):
        name, mode = self._setup_named(mode, dataset_root, transforms, edge)
        voc = os.path.join(self.dataset_root, 'VOC2012')
        sets = os.path.join(voc, 'ImageSets', 'Segmentation')
        parts = [('train.txt' if mode == 'trainaug' else f'{mode}.txt', 'SegmentationClass')]
        if mode == 'trainaug':
            parts.append(('aug.txt', 'SegmentationClassAug'))
        self.file_list = []
        for list_name, label_folder in parts:
            list_path = _require_file(name, os.path.join(sets, list_name), 'list file')
            with open(list_path) as f:
                names = [line.strip() for line in f if line.strip()]
            for stem in names:
                image = _require_file(name, os.path.join(voc, 'JPEGImages', stem + '.jpg'), 'image')
                label = _require_file(name, os.path.join(voc, label_folder, stem + '.png'), 'label')
                self.file_list.append([image, label])
        if not self.file_list:
            raise UserError(f"{name}: the list file names no samples: {os.path.join(sets, parts[0][0])}")


class _RootListDataset(_NamedDataset):
    """A dataset whose list files ``train.txt`` / ``val.txt`` / ``test.txt`` lie in ``dataset_root``."""
    NUM_CLASSES = 2
    SEPARATOR = ' '

    def __init__(self, dataset_root=None, transforms=None, mode='train', edge=False):
        name, mode = self._setup_named(mode, dataset_root, transforms, edge)
        list_path = _require_file(name, os.path.join(self.dataset_root, f'{mode}.txt'), 'list file')
        self.list_path = list_path
        self.file_list = read_list_file(list_path, self.dataset_root, self.SEPARATOR, need_label=mode != 'test')


@register_dataset
class PPHumanSeg14K(_RootListDataset):
    """PP-HumanSeg14K portrait segmentation (2 classes; Chu et al., WACV 2022), PaddleSeg's layout.

    ``dataset_root/{train,val,test}.txt`` with ``image label`` paths relative to ``dataset_root``.

    Args:
        dataset_root (str): The dataset folder.
        transforms (list): Transforms.
        mode (str, optional): 'train', 'val' or 'test'. Default: 'train'.
        edge (bool, optional): In 'train' mode also return a binary edge map. Default: False.
    """
    LAYOUT = "train.txt / val.txt / test.txt listing 'image label' relative to dataset_root"
    CLASSES = ('background', 'person')
    PALETTE = [[0, 0, 0], [220, 20, 60]]  # person: Cityscapes' colour


@register_dataset
class MiniDeepGlobeRoadExtraction(_RootListDataset):
    """The mini DeepGlobe road extraction set (2 classes), PaddleSeg's layout.

    ``dataset_root/{train,val}.txt`` with ``image|label`` paths relative to ``dataset_root``.

    Args:
        dataset_root (str): The dataset folder (PaddleSeg would download it when None; we do not).
        transforms (list): Transforms.
        mode (str, optional): 'train' or 'val'. Default: 'train'.
        edge (bool, optional): In 'train' mode also return a binary edge map. Default: False.
    """
    MODES = ('train', 'val')
    SEPARATOR = '|'
    LAYOUT = "train.txt / val.txt listing 'image|label' relative to dataset_root"
    CLASSES = ('background', 'road')
    PALETTE = [[0, 0, 0], [128, 64, 128]]  # road: Cityscapes' colour
