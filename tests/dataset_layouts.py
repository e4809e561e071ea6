"""Tiny datasets in PaddleSeg's folder layouts, made from camvid_mini for tests: Cityscapes, ADE20K, Pascal VOC,
PP-HumanSeg14K and MiniDeepGlobeRoadExtraction.  Images are resized (bilinear) and labels (nearest) so that models
run fast; label values are CamVid's 0..10 and 255, which fit every layout's class count except the 2-class ones,
where 'Road' (3) becomes class 1 and everything else class 0."""
import os

import numpy as np
from PIL import Image

ROAD = 3


def camvid_samples(camvid, split, count):
    """The first ``count`` (image, label) paths of camvid_mini's ``split`` list."""
    with open(os.path.join(camvid, f'{split}.txt')) as f:
        pairs = [line.split() for line in f if line.strip()]
    return [(os.path.join(camvid, a), os.path.join(camvid, b)) for a, b in pairs[:count]]


def _write(image_path, label_path, out_image, out_label, size, label_fn=None, image_format=None):
    os.makedirs(os.path.dirname(out_image), exist_ok=True)
    os.makedirs(os.path.dirname(out_label), exist_ok=True)
    Image.open(image_path).convert('RGB').resize(size, Image.BILINEAR).save(out_image, format=image_format)
    label = np.asarray(Image.open(label_path).resize(size, Image.NEAREST))
    if label_fn is not None:
        label = label_fn(label)
    Image.fromarray(label.astype(np.uint8)).save(out_label)


def binary_road(label):
    """2 classes: road 1, the rest 0 (ignored pixels stay 255)."""
    return np.where(label == 255, 255, (label == ROAD).astype(np.uint8))


def make_cityscapes(root, camvid, counts=(2, 1), size=(128, 96)):
    """``leftImg8bit/<mode>/camvid/<n>_leftImg8bit.png`` + ``gtFine/<mode>/camvid/<n>_gtFine_labelTrainIds.png``."""
    for mode, count in zip(('train', 'val'), counts):
        for i, (img, lab) in enumerate(camvid_samples(camvid, mode, count)):
            stem = f'camvid_{i:06d}_000019'
            _write(img, lab, os.path.join(root, 'leftImg8bit', mode, 'camvid', f'{stem}_leftImg8bit.png'),
                   os.path.join(root, 'gtFine', mode, 'camvid', f'{stem}_gtFine_labelTrainIds.png'), size)
    return str(root)


def make_ade20k(root, camvid, counts=(2, 1), size=(128, 96)):
    """``images/{training,validation}/*.jpg`` + ``annotations/...png`` holding class id + 1 (0 = ignored)."""
    def shift(label):
        return np.where(label == 255, 0, label + 1)
    for mode, folder, count in (('train', 'training', counts[0]), ('val', 'validation', counts[1])):
        for i, (img, lab) in enumerate(camvid_samples(camvid, mode, count)):
            stem = f'ADE_{folder}_{i:08d}'
            _write(img, lab, os.path.join(root, 'images', folder, stem + '.jpg'),
                   os.path.join(root, 'annotations', folder, stem + '.png'), size, shift, 'JPEG')
    return str(root)


def make_voc(root, camvid, counts=(2, 1), size=(128, 96)):
    """``VOC2012/{JPEGImages,SegmentationClass,SegmentationClassAug,ImageSets/Segmentation}``; ``aug.txt`` names
    one more sample for 'trainaug'."""
    voc = os.path.join(root, 'VOC2012')
    sets = os.path.join(voc, 'ImageSets', 'Segmentation')
    os.makedirs(sets, exist_ok=True)
    names = {}
    for mode, count in zip(('train', 'val'), counts):
        names[mode] = []
        for i, (img, lab) in enumerate(camvid_samples(camvid, mode, count)):
            stem = f'2007_{mode}_{i:04d}'
            _write(img, lab, os.path.join(voc, 'JPEGImages', stem + '.jpg'),
                   os.path.join(voc, 'SegmentationClass', stem + '.png'), size, None, 'JPEG')
            names[mode].append(stem)
    img, lab = camvid_samples(camvid, 'train', counts[0] + 1)[-1]
    _write(img, lab, os.path.join(voc, 'JPEGImages', 'aug_0000.jpg'),
           os.path.join(voc, 'SegmentationClassAug', 'aug_0000.png'), size, None, 'JPEG')
    for mode, lines in (('train', names['train']), ('val', names['val']), ('trainval', names['train'] + names['val']),
                        ('aug', ['aug_0000'])):
        with open(os.path.join(sets, f'{mode}.txt'), 'w') as f:
            f.write('\n'.join(lines) + '\n')
    return str(root)


def make_list_layout(root, camvid, separator=' ', counts=(2, 1), size=(128, 96)):
    """``train.txt`` / ``val.txt`` in ``root`` listing ``images/..`` and ``labels/..`` (2 classes: road / not)."""
    for mode, count in zip(('train', 'val'), counts):
        lines = []
        for i, (img, lab) in enumerate(camvid_samples(camvid, mode, count)):
            image, label = f'images/{mode}_{i}.jpg', f'labels/{mode}_{i}.png'
            _write(img, lab, os.path.join(root, image), os.path.join(root, label), size, binary_road, 'JPEG')
            lines.append(f'{image}{separator}{label}')
        with open(os.path.join(root, f'{mode}.txt'), 'w') as f:
            f.write('\n'.join(lines) + '\n')
    return str(root)
