"""SyntheticShapes: the embedded default dataset, generated in code (no download, no files).

Each sample is a textured, noisy background with one to four filled shapes (circle, square, triangle, ring) of random
size, position, rotation and colour.  The label is the shape's class, whatever its colour, so a model has to learn
shape rather than colour; shapes are large (radius 12-24 % of the image side) so that a small CNN learns them in a
few minutes on a CPU.  Every sample is a pure function of ``(seed, mode, index)``.
"""
import numpy as np
import paddle
from paddleseg.transforms import Compose

from ..errors import UserError
from ..registry import register_dataset
from ..utils.validate import check_int
from .list_dataset import check_mode

_MODE_IDS = {'train': 0, 'val': 1}


@register_dataset
class SyntheticShapes(paddle.io.Dataset):
    """Images of coloured shapes on textured backgrounds, labelled by shape.

    ``__getitem__`` returns what ``paddleseg.datasets.Dataset`` returns: a dict with 'img' (CHW float32 after the
    transforms), 'label', 'trans_info' and 'gt_fields'; in 'train' mode the label is transformed with the image, in
    'val' mode only the image is transformed and the label gets a leading axis (1, H, W).

    Args:
        mode (str, optional): 'train' or 'val'. Default: 'train'.
        transforms (list, optional): PaddleSeg transform objects, applied as PaddleSeg's ``Compose`` does (the
            image enters as BGR float32 HWC, like ``cv2.imread``, and leaves as RGB CHW). Default: none.
        num_samples (int, optional): Dataset length. Default: 400 for 'train', 80 for 'val'.
        image_size (int, optional): Side of the square images, at least 16. Default: 64.
        seed (int, optional): Seed of the generator; with ``mode`` and the index it fixes each sample. Default: 0.
        dataset_root (str, optional): Ignored; accepted so that configs written for file datasets work.
    """
    NUM_CLASSES = 5
    IGNORE_INDEX = 255
    IMG_CHANNELS = 3
    CLASSES = ('background', 'circle', 'square', 'triangle', 'ring')
    PALETTE = [[0, 0, 0], [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200]]
    DEFAULT_NUM_SAMPLES = {'train': 400, 'val': 80}

    def __init__(self, mode='train', transforms=None, num_samples=None, image_size=64, seed=0, dataset_root=None):
        owner = type(self).__name__
        self.mode = check_mode(owner, mode, tuple(_MODE_IDS))
        if num_samples is None:
            num_samples = self.DEFAULT_NUM_SAMPLES[self.mode]
        num_samples = check_int(owner, 'num_samples', num_samples)
        image_size = check_int(owner, 'image_size', image_size, minimum=16)
        seed = check_int(owner, 'seed', seed, minimum=0, maximum=2 ** 32 - 1)
        if transforms is None:
            transforms = []
        if not isinstance(transforms, (list, tuple)):
            raise UserError(f"transforms must be a list of transforms, got {type(transforms).__name__}")
        self.transforms = Compose(list(transforms), img_channels=self.IMG_CHANNELS)
        self.num_samples = num_samples
        self.image_size = image_size
        self.seed = seed
        self.dataset_root = dataset_root
        self.num_classes = self.NUM_CLASSES
        self.ignore_index = self.IGNORE_INDEX
        self.img_channels = self.IMG_CHANNELS

    def __len__(self):
        return self.num_samples

    def generate(self, idx):
        """Return sample ``idx`` before any transform: (RGB uint8 image (S, S, 3), uint8 label (S, S))."""
        if not -self.num_samples <= idx < self.num_samples:
            raise IndexError(f"index {idx} is out of range for {self.num_samples} samples")
        idx = int(idx) % self.num_samples
        rng = np.random.RandomState([self.seed, _MODE_IDS[self.mode], idx])
        size = self.image_size
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5
        image = _background(rng, xx, yy, size)
        label = np.zeros((size, size), dtype=np.uint8)

        placed = []  # (cx, cy, r) of the shapes drawn so far
        for _ in range(rng.randint(1, 5)):
            cls = rng.randint(1, self.NUM_CLASSES)
            for _attempt in range(30):
                r = rng.uniform(0.12, 0.24) * size
                extent = 1.2 * r  # the farthest any shape reaches from its centre (a square's corner)
                cx, cy = rng.uniform(extent, size - extent, size=2)
                if all(np.hypot(cx - px, cy - py) > 0.9 * (r + pr) for px, py, pr in placed):
                    break
            else:
                continue  # no room left for this shape
            placed.append((cx, cy, r))
            mask = _shape_mask(cls, xx - cx, yy - cy, r, rng.uniform(0.0, 2.0 * np.pi))
            colour = _contrasting_colour(rng, image[mask].mean(axis=0))
            image[mask] = colour + rng.normal(0.0, 8.0, size=(int(mask.sum()), 3))
            label[mask] = cls
        return np.clip(image, 0, 255).astype(np.uint8), label

    def __getitem__(self, idx):
        rgb, label = self.generate(idx)
        data = {'trans_info': [], 'img': rgb[:, :, ::-1].astype('float32'), 'label': label, 'gt_fields': []}
        if self.mode == 'val':
            data = self.transforms(data)
            data['label'] = data['label'][np.newaxis, :, :]
        else:
            data['gt_fields'].append('label')
            data = self.transforms(data)
        return data


def _background(rng, xx, yy, size):
    """A float RGB background: a two-colour linear gradient, a few faint stripes and pixel noise."""
    c0, c1 = rng.uniform(0, 255, size=(2, 3))
    angle = rng.uniform(0, 2 * np.pi)
    t = ((xx - size / 2) * np.cos(angle) + (yy - size / 2) * np.sin(angle)) / size + 0.5
    t = np.clip(t, 0.0, 1.0)[..., None]
    image = c0 * (1 - t) + c1 * t
    for _ in range(rng.randint(1, 4)):
        freq = rng.uniform(2.0, 8.0) * 2 * np.pi / size
        theta = rng.uniform(0, np.pi)
        phase = rng.uniform(0, 2 * np.pi)
        wave = np.sin(freq * (xx * np.cos(theta) + yy * np.sin(theta)) + phase)
        image = image + rng.uniform(5, 20) * wave[..., None]
    return image + rng.normal(0.0, 10.0, size=image.shape)


def _shape_mask(cls, dx, dy, r, angle):
    """Boolean mask of shape ``cls`` (1 circle, 2 square, 3 triangle, 4 ring) of radius ``r``, rotated by
    ``angle``, given pixel offsets ``dx``, ``dy`` from its centre."""
    if cls == 1:
        return np.hypot(dx, dy) <= r
    if cls == 4:
        d = np.hypot(dx, dy)
        return (d <= r) & (d >= 0.55 * r)
    u = dx * np.cos(angle) + dy * np.sin(angle)
    v = -dx * np.sin(angle) + dy * np.cos(angle)
    if cls == 2:
        half_side = 0.85 * r
        return (np.abs(u) <= half_side) & (np.abs(v) <= half_side)
    # equilateral triangle of circumradius 1.15 r: inside all three edges, each at distance R / 2 from the centre
    circumradius = 1.15 * r
    inside = np.ones(dx.shape, dtype=bool)
    for k in range(3):
        normal = np.pi / 3 + k * 2 * np.pi / 3
        inside &= u * np.cos(normal) + v * np.sin(normal) <= circumradius / 2
    return inside


def _contrasting_colour(rng, background, min_distance=90.0):
    """A random RGB colour at least ``min_distance`` away from ``background`` (best of 20 draws otherwise)."""
    best, best_distance = None, -1.0
    for _ in range(20):
        colour = rng.uniform(0, 255, size=3)
        distance = float(np.linalg.norm(colour - background))
        if distance >= min_distance:
            return colour
        if distance > best_distance:
            best, best_distance = colour, distance
    return best
