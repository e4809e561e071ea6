"""Prediction on image files: pseudo-color PNGs and color overlays (``core/visualize.py``), in the palette the caller
gives (the dataset's, the colours deploy/python/infer.py uses) or else PaddleSeg's."""
import os

import cv2
import numpy as np
import paddle
from paddleseg.transforms import Compose
from tqdm import tqdm

from paddle_models.core import logger
from paddle_models.core.logits import aug_logits, predict_logits
from paddle_models.core.visualize import apply_custom_color, color_overlay, default_palette, pseudo_color_image
from paddle_models import image_io
from paddle_models.errors import UserError

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff', '.webp')


def list_images(image_path):
    """Images named by ``image_path``: one file, every image below a folder, or the lines of a .txt list.

    Returns:
        (list of image paths, the folder the output names are made relative to)
    """
    if not image_path or not os.path.exists(image_path):
        raise UserError(f"--image_path not found: {image_path}")
    if os.path.isdir(image_path):
        images = sorted(os.path.join(root, name) for root, _, names in os.walk(image_path) for name in names
                        if name.lower().endswith(IMAGE_EXTENSIONS))
        if not images:
            raise UserError(f"--image_path folder has no images: {image_path}")
        return images, image_path
    if image_path.endswith('.txt'):
        base = os.path.dirname(image_path)
        with open(image_path) as f:
            images = [os.path.join(base, line.split()[0]) for line in f if line.strip()]
        for path in images:
            if not os.path.isfile(path):
                raise UserError(f"{image_path}: image not found: {path}")
        return images, base
    return [image_path], os.path.dirname(image_path)


def read_image(path, max_pixels=None):
    """An image as ``cv2.imread`` gives it (BGR uint8), checked to be complete and at most ``max_pixels`` first
    (``paddle_models.image_io.read_image``)."""
    return image_io.read_image(path, cv2.IMREAD_COLOR, max_pixels=max_pixels)


def output_name(path, base):
    """The name (no suffix) under which the results of image ``path`` are written below ``save_dir``.

    It is the image's path under ``base`` (the folder or list file's folder of ``--image_path``) where the image
    lies there; an image elsewhere (a list entry ``../x.jpg`` or ``/data/x.jpg``) keeps its absolute path without
    the root and drive (``data/x``). So no name leads outside ``save_dir``.
    """
    image = os.path.abspath(path)
    try:
        name = os.path.relpath(image, os.path.abspath(base or os.curdir))
    except ValueError:  # another drive (Windows)
        name = os.pardir
    if name == os.pardir or name.startswith(os.pardir + os.sep) or os.path.isabs(name):
        name = os.path.splitdrive(image)[1].lstrip(os.sep + (os.altsep or ''))
    return os.path.splitext(name)[0]


def unique_names(names):
    """``names`` (output names without suffix, in the images' order) made distinct: the first image with a name
    keeps it, each later one gets ``<name>_1``, ``<name>_2``, ... (the first such name that no image has), so
    ``a.jpg`` and ``a.png`` give ``a.png`` and ``a_1.png`` instead of one overwriting the other. Names are compared
    case-insensitively (``A.jpg`` and ``a.png`` would share a file on macOS and Windows).

    Returns:
        list[str]: The names, in the same order.
    """
    taken = {name.casefold() for name in names}
    used, out = set(), []
    for name in names:
        unique = name
        if name.casefold() in used:
            number = 1
            while f"{name}_{number}".casefold() in taken:
                number += 1
            unique = f"{name}_{number}"
            taken.add(unique.casefold())
        used.add(unique.casefold())
        out.append(unique)
    return out


def bytes_per_pixel(num_classes):
    """Memory prediction needs per image pixel at least, before the model's own activations: the decoded image
    (3 B), its float32 copy, the transformed copy and the input tensor (12 B each), the class scores at the image's
    size (4 B per class) and the class map (4 B)."""
    return 3 + 3 * 12 + 4 * (num_classes or 1) + 4


def apply_transforms(compose, image_bgr, what):
    """The val transforms ``compose`` applied to one BGR image: ``{'img': (C, H, W) float32, 'trans_info': [...]}``.

    A transform that refuses the image (PaddleSeg's ``Padding`` raises ``ValueError`` for an image larger than its
    ``target_size``, as in the Pascal VOC configs) is a one-line ``UserError`` naming ``what`` (the file or array)
    and the transform's reason, not a traceback.
    """
    try:
        return compose({'img': image_bgr.astype('float32'), 'trans_info': []})
    except ValueError as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"{what}: the config's val transforms refuse this image: {reason}") from None


def predict(model, image_path, transforms, save_dir='output/result', palette=None, num_classes=None,
            aug_pred=False, scales=1.0, flip_horizontal=False, flip_vertical=False, is_slide=False,
            crop_size=None, stride=None, progress=True, custom_color=None):
    """Predict every image of ``image_path`` and write ``save_dir/pseudo_color_prediction/NAME.png`` (pseudo-color
    PNG: pixel values are class ids) and ``save_dir/added_prediction/NAME.jpg`` (color overlay, colours at 40%);
    NAME is always inside ``save_dir`` (``output_name``), and no two images share one (``unique_names``: ``a.jpg``
    and ``a.png`` give ``a`` and ``a_1``). Folders are created when the first result is written.

    Every image is checked before anything is written: readable, complete (not truncated) and small enough for the
    available memory (``bytes_per_pixel``); else a UserError names the image (and its size).

    Args:
        palette (list): RGB triples per class; default: ``default_palette``.
        custom_color (list[int]): Flat R G B values replacing the palette's first colours in both outputs
            (``predict.py --custom_color``, ``test_config.custom_color``).

    Returns:
        list[str]: the pseudo-color PNG paths written.
    """
    images, base = list_images(image_path)
    max_pixels = image_io.memory_pixel_limit(bytes_per_pixel(num_classes))
    sizes = {}
    for path in images:  # fail before any output (or progress bar) on a file that is not a complete image
        if not cv2.haveImageReader(path):
            raise UserError(f"cannot read image: {path}")
        sizes[path] = image_io.check_image(path, max_pixels=max_pixels)
    compose = Compose(list(transforms))
    palette = palette or default_palette(num_classes or 256)
    if custom_color:
        palette = apply_custom_color(palette, custom_color)
    names = unique_names([output_name(path, base) for path in images])
    for path, name in zip(images, names):
        if name != output_name(path, base):
            logger.info(f"{path}: its results are named {name} (another image has the name "
                        f"{output_name(path, base)})")
    model.eval()
    written = []
    with paddle.no_grad():
        for path, name in tqdm(list(zip(images, names)), desc='predict', unit='img', disable=not progress):
            width, height = sizes[path]
            try:
                original = read_image(path, max_pixels)
                height, width = original.shape[:2]
                data = apply_transforms(compose, original, path)
                image = paddle.to_tensor(data['img'][np.newaxis])
                if aug_pred:
                    logit = aug_logits(model, image, data['trans_info'], scales, flip_horizontal, flip_vertical,
                                       is_slide, crop_size, stride)
                else:
                    logit = predict_logits(model, image, data['trans_info'], is_slide, crop_size, stride)
                pred = paddle.argmax(logit, axis=1).numpy()[0].astype(np.uint8)
            except MemoryError:
                size = f" is {width}x{height} pixels" if width and height else ''
                raise UserError(f"image too large for memory: {path}{size}") from None
            png_path = os.path.join(save_dir, 'pseudo_color_prediction', name + '.png')
            overlay_path = os.path.join(save_dir, 'added_prediction', name + '.jpg')
            os.makedirs(os.path.dirname(png_path), exist_ok=True)
            os.makedirs(os.path.dirname(overlay_path), exist_ok=True)
            pseudo_color_image(pred, palette).save(png_path)
            cv2.imwrite(overlay_path, color_overlay(original[..., ::-1], pred, palette, alpha=0.4)[..., ::-1])
            written.append(png_path)
    return written
