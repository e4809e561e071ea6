"""Datasets described by list files (``image label`` per line), with input checks.

The helpers here are shared by every file-backed dataset of the package: they check the dataset root and the list
file, resolve the paths a list names, and load one sample (image and label, each read once) with its label values
checked.  Whatever the user must fix raises :class:`paddle_models.errors.UserError` with a one-line message naming the
file, key or value at fault.

:class:`Dataset` is registered under PaddleSeg's name ``Dataset``, so PaddleSeg YAML files written for the generic
list-file dataset (``type: Dataset``) build this one and get the checks.
"""
import io
import os

import cv2
import numpy as np
from PIL import Image

import paddleseg.datasets
import paddleseg.transforms.functional as seg_functional
from paddleseg.transforms import Compose

from ..errors import UserError
from ..image_io import check_image, read_bytes, read_image
from ..registry import register_dataset
from ..utils.validate import check_bool, check_choice, check_int

MODES = ('train', 'val', 'test')


def check_mode(owner, mode, allowed=MODES):
    """Return ``mode`` lower-cased (PaddleSeg accepts 'Train'), or raise UserError when it is not one of
    ``allowed``: "<owner>: mode must be one of 'train', 'val', got 'test'"."""
    if isinstance(mode, str) and mode.lower() in allowed:
        return mode.lower()
    return check_choice(owner, 'mode', mode, allowed)  # raises: ``mode`` is none of them


def not_found_error(what, path, owner=None, expected=None):
    """The UserError for a file or folder that does not exist, in one wording for every dataset:
    ``[<owner>: ]<what> not found: <path> (<absolute path>; expected <expected>)``.

    Relative paths in a config are read against the working directory (as PaddleSeg reads them), so a relative
    ``path`` is followed by the absolute path it was looked for at; an absolute one is not repeated. ``expected``
    (optional) describes what should be there, e.g. the dataset's folder layout. For example
    ``Cityscapes: dataset_root not found: data/cityscapes (/home/me/run/data/cityscapes; expected leftImg8bit/...)``.
    """
    notes = []
    if path is not None and not os.path.isabs(str(path)):
        notes.append(os.path.abspath(str(path)))
    if expected:
        notes.append(f"expected {expected}")
    prefix = f"{owner}: " if owner else ''
    details = f" ({'; '.join(notes)})" if notes else ''
    return UserError(f"{prefix}{what} not found: {path}{details}")


def check_dataset_root(dataset_root):
    """Raise UserError unless ``dataset_root`` is an existing directory; return it unchanged."""
    if dataset_root is None or not os.path.isdir(str(dataset_root)):
        raise not_found_error('dataset_root', dataset_root)
    return str(dataset_root)


def resolve_list_path(key, list_path, dataset_root):
    """Find the list file given as ``key`` (e.g. ``train_path``).

    An absolute path is used as is.  A relative path is looked up inside ``dataset_root`` first, then relative to the
    working directory (where PaddleSeg's own configs point).  Raises UserError naming the key and the path (inside
    ``dataset_root`` for a relative one) when neither exists.
    """
    list_path = str(list_path)
    if os.path.isabs(list_path):
        candidates = [list_path]
    else:
        candidates = [os.path.join(dataset_root, list_path), list_path]
    for candidate in candidates:
        if os.path.isfile(candidate):
            return candidate
    raise not_found_error(key, candidates[0])


def read_list_file(list_path, dataset_root, separator=' ', need_label=True, map_path=None):
    """Parse a list file into ``[[image_path, label_path_or_None], ...]``.

    Each line holds ``image<separator>label`` (or only ``image`` where ``need_label`` is False).  Paths are joined to
    ``dataset_root`` (an absolute path stays absolute).  ``map_path(path, line_item)``, when given, may return another
    path to use for a named file that does not exist (CamVid's SegNet lists name files under ``/SegNet/CamVid``).
    Blank lines are skipped.  Raises UserError naming ``list_path`` and the line number for a malformed line or a
    file that does not exist.
    """
    samples = []
    with open(list_path, 'r') as f:
        lines = f.read().splitlines()
    for lineno, line in enumerate(lines, start=1):
        text = line.strip()
        if not text:
            continue
        items = text.split(separator) if separator != ' ' else text.split()
        if len(items) not in (1, 2) or (need_label and len(items) != 2):
            expected = f"image{separator}label" if need_label else f"image[{separator}label]"
            raise UserError(f"{list_path}:{lineno}: expected '{expected}', got {text!r}")
        paths = []
        for kind, item in zip(('image', 'label'), items):
            path = os.path.join(dataset_root, item)
            if not os.path.isfile(path) and map_path is not None:
                path = map_path(path, item)
            if not os.path.isfile(path):
                raise not_found_error(kind, path, owner=f"{list_path}:{lineno}")
            paths.append(path)
        samples.append([paths[0], paths[1] if len(paths) == 2 else None])
    if not samples:
        raise UserError(f"{list_path}: the list file names no samples")
    return samples


def load_image(path, img_channels=3):
    """Read an image as PaddleSeg's ``Compose`` does (cv2, BGR, float32 HWC; HW for one channel), checked to be
    complete first (``paddle_models.image_io``).

    Raises UserError ``cannot read image: PATH`` when OpenCV cannot decode the file, ``cannot read image: PATH:
    truncated JPEG file (...)`` when the file is cut short or corrupt, ``image too large for memory: PATH is WxH
    pixels`` beyond OpenCV's decoding limit.
    """
    flag = cv2.IMREAD_GRAYSCALE if img_channels == 1 else cv2.IMREAD_COLOR
    return read_image(path, flag).astype('float32')


def load_label(path, num_classes, ignore_index=255, value_map=None):
    """Read a single-channel label image (as PaddleSeg does, via PIL) and check its values.

    Args:
        path (str): The label file.
        num_classes (int): Valid class ids are ``0 .. num_classes - 1``.
        ignore_index (int): The one other value allowed.
        value_map (dict|numpy.ndarray, optional): Values to replace before the check, e.g. ``{11: 255}``, or a
            256-entry lookup table applied to an 8-bit label (``table[label]``).

    Returns:
        np.ndarray: The label (H, W), in the file's integer type (uint8 for 8-bit PNGs).

    Raises:
        UserError: ``cannot read label: PATH``, with the reason where the file is truncated or corrupt (checked
            before decoding, see ``paddle_models.image_io``); a label with more than one channel; a value outside
            the classes that is not ``ignore_index`` (``PATH: label value 17 is out of range for 11 classes
            (ignore_index 255)``).
    """
    data = read_bytes(path, 'label')
    check_image(path, 'label', data=data)
    try:
        with Image.open(io.BytesIO(data)) as image:
            label = np.asarray(image)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        raise UserError(f"cannot read label: {path}") from None
    if label.ndim != 2:
        raise UserError(f"{path}: a label must be a single-channel image, got shape {label.shape}")
    if isinstance(value_map, np.ndarray):
        if label.dtype != np.uint8:
            raise UserError(f"{path}: expected an 8-bit label, got {label.dtype}")
        label = value_map[label]
    elif value_map:
        remapped = label.copy()
        for old, new in value_map.items():
            remapped[label == old] = new
        label = remapped
    check_label_values(label, path, num_classes, ignore_index)
    return label


def check_label_values(label, path, num_classes, ignore_index):
    """Raise UserError when ``label`` holds a value that is neither a class id nor ``ignore_index``.

    One pass over the array: a histogram for 8-bit labels, ``np.unique`` otherwise.  The smallest offending value is
    named.
    """
    if label.dtype == np.uint8:
        values = np.flatnonzero(np.bincount(label.ravel(), minlength=256))
    elif label.dtype == np.bool_:
        values = np.unique(label.astype(np.uint8))
    else:
        values = np.unique(label)
    bad = values[((values < 0) | (values >= num_classes)) & (values != ignore_index)]
    if bad.size:
        raise UserError(f"{path}: label value {int(bad[0])} is out of range for {num_classes} classes "
                        f"(ignore_index {ignore_index})")


@register_dataset
class Dataset(paddleseg.datasets.Dataset):
    """A dataset described by list files, PaddleSeg's generic ``Dataset`` with input checks.

    Same arguments and same samples as ``paddleseg.datasets.Dataset``; in addition the dataset root, the list file
    and every file a list names are checked when the dataset is built, and each label is checked when its sample is
    loaded (image and label are each read once).  Problems raise UserError with a one-line message.

    Args:
        mode (str): 'train', 'val' or 'test'.
        dataset_root (str): The dataset directory; list entries are relative to it.
        transforms (list): PaddleSeg transform objects.
        num_classes (int): Number of classes.
        img_channels (int, optional): 1 or 3. Default: 3.
        train_path (str, optional): The train list file (needed in 'train' mode). A relative path is looked up in
            ``dataset_root`` first, then in the working directory.
        val_path (str, optional): The val list file (needed in 'val' mode).
        test_path (str, optional): The test list file (needed in 'test' mode; its lines may omit the label).
        separator (str, optional): Separator between image and label on a line. Default: ' ' (any whitespace).
        ignore_index (int, optional): Label value that is ignored. Default: 255.
        edge (bool, optional): In 'train' mode, also return a binary edge map under 'edge'. Default: False.
    """

    def __init__(self,
                 mode,
                 dataset_root,
                 transforms,
                 num_classes,
                 img_channels=3,
                 train_path=None,
                 val_path=None,
                 test_path=None,
                 separator=' ',
                 ignore_index=255,
                 edge=False):
        self._setup(mode, dataset_root, transforms, num_classes, img_channels, ignore_index, edge)
        list_paths = {'train': train_path, 'val': val_path, 'test': test_path}
        key = f"{self.mode}_path"
        if list_paths[self.mode] is None:
            raise UserError(f"{key} is required in {self.mode!r} mode")
        self.list_path = resolve_list_path(key, list_paths[self.mode], self.dataset_root)
        self.file_list = read_list_file(self.list_path, self.dataset_root, separator,
                                        need_label=self.mode != 'test')

    def _setup(self, mode, dataset_root, transforms, num_classes, img_channels, ignore_index, edge):
        """Check and store the arguments every list dataset shares."""
        owner = type(self).__name__
        self.mode = check_mode(owner, mode)
        self.dataset_root = check_dataset_root(dataset_root)
        if not isinstance(transforms, (list, tuple)):
            raise UserError(f"transforms must be a list of transforms, got {type(transforms).__name__}")
        self.num_classes = check_int(owner, 'num_classes', num_classes)
        self.img_channels = check_choice(owner, 'img_channels', img_channels, (1, 3))
        self.transforms = Compose(list(transforms), img_channels=self.img_channels)
        self.ignore_index = check_int(owner, 'ignore_index', ignore_index, minimum=None)
        self.edge = check_bool(owner, 'edge', edge)
        self.file_list = []

    def label_value_map(self, label_path):
        """Values to replace in the label read from ``label_path`` before it is checked (none here)."""
        return None

    def __getitem__(self, idx):
        image_path, label_path = self.file_list[idx]
        img = load_image(image_path, self.img_channels)
        label = None
        if label_path is not None:
            label = load_label(label_path, self.num_classes, self.ignore_index, self.label_value_map(label_path))
            if label.shape != img.shape[:2]:
                raise UserError(f"{label_path}: label size {label.shape[1]}x{label.shape[0]} differs from the "
                                f"image size {img.shape[1]}x{img.shape[0]} of {image_path}")
        data = {'trans_info': [], 'img': img, 'label': label, 'gt_fields': []}
        if self.mode == 'val':
            data = self.transforms(data)
            data['label'] = data['label'][np.newaxis, :, :]
        else:
            if label is not None:
                data['gt_fields'].append('label')
            data = self.transforms(data)
            if self.edge and label is not None:
                data['edge'] = seg_functional.mask_to_binary_edge(
                    data['label'], radius=2, num_classes=self.num_classes)
        return data

    def __len__(self):
        return len(self.file_list)
