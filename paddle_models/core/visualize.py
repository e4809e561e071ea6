"""The package's one home of class colours: palettes, pseudo-color PNGs, color overlays with a legend of class names
(what ``paddle_models.visualize`` returns, what evaluation logs to VisualDL and what ``predict.py`` writes).

The vocabulary, here and in deploy/python/infer.py (which repeats its part: it stands alone):

* **palette**: one RGB colour per class id (``default_palette``: PaddleSeg's; ``full_palette``; a dataset's
  ``PALETTE``; deploy.yaml's ``Deploy.palette``; ``--custom_color`` replaces its first colours);
* **pseudo-color PNG**: a palette-mode PNG whose pixel values are the class ids (``pseudo_color_image``; PaddleSeg's
  ``pseudo_color_prediction/``);
* **color overlay**: the image blended with each pixel's class colour (``color_overlay``; PaddleSeg's
  ``added_prediction/``).

Everything here works on RGB uint8 arrays (H, W, 3), the layout matplotlib, PIL and VisualDL expect. Images read
with OpenCV are BGR and must be flipped first (``image[..., ::-1]``).
"""
import cv2
import numpy as np
from paddleseg.cvlibs import manager
from paddleseg.utils.visualize import get_color_map_list
from PIL import Image

from paddle_models.errors import UserError

# legend text: OpenCV's built-in Hershey font (no font files needed), black on white
_FONT = cv2.FONT_HERSHEY_SIMPLEX
_FONT_SCALE = 0.4
_ROW = 16  # legend row height in pixels
_SWATCH = 12  # side of a legend colour square in pixels
_MARGIN = 4


def default_palette(num_classes):
    """PaddleSeg's colour per class (``paddleseg.utils.visualize.get_color_map_list``: class i gets the PASCAL VOC
    colour of label i + 1), as RGB triples. deploy/python/infer.py colours with the same map, so a class has one
    colour whether predicted from the weights or from the exported model."""
    flat = get_color_map_list(num_classes)
    return [tuple(flat[i:i + 3]) for i in range(0, 3 * num_classes, 3)]


def check_custom_color(values, what='--custom_color'):
    """``values`` as a flat list of R, G, B integers (a multiple of 3, each 0..255, at most 256 colours), else a
    UserError naming ``what``."""
    values = list(values) if isinstance(values, (list, tuple)) else values
    if not isinstance(values, list) or not values or len(values) % 3 or len(values) > 3 * 256 or \
            any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not 0 <= v <= 255 for v in values):
        raise UserError(f"{what} must be flat R G B values (a multiple of 3 integers in 0..255, at most 256 "
                        f"colours), got {values!r}")
    return [int(v) for v in values]


def apply_custom_color(palette, custom_color):
    """``palette`` (a list of RGB triples) with its first colours replaced by ``custom_color``, flat R G B values
    (class 0 takes the first three), as PaddleSeg's ``--custom_color`` replaces the start of its colour map; a
    palette shorter than the custom colours is extended."""
    values = check_custom_color(custom_color)
    flat = [int(c) for colour in palette for c in colour]
    flat += [0] * max(len(values) - len(flat), 0)
    flat[:len(values)] = values
    return [tuple(flat[i:i + 3]) for i in range(0, len(flat), 3)]


def pseudo_color_image(mask, palette):
    """The pseudo-color PNG of an (H, W) class map: a palette-mode PIL image whose pixel values are the class ids
    (0..255), coloured by ``palette`` (RGB triples; ids past it are black)."""
    image = Image.fromarray(np.asarray(mask).astype(np.uint8), mode='P')
    flat = [int(c) for colour in palette for c in colour][:768]
    image.putpalette(flat + [0] * (768 - len(flat)))
    return image


def dataset_info(dataset):
    """The palette and class names a dataset declares (``PALETTE`` and ``CLASSES`` class attributes, as our
    ``CamVid`` and ``SyntheticShapes`` have).

    Args:
        dataset: A registered dataset name (``'CamVid'``), a dataset class or a dataset object; None gives nothing.

    Returns:
        (list of RGB tuples or None, list of names or None)

    Raises:
        UserError: ``dataset`` is a string that names no registered dataset.
    """
    if dataset is None:
        return None, None
    if isinstance(dataset, str):
        known = manager.DATASETS.components_dict
        if dataset not in known:
            raise UserError(f"dataset: unknown dataset {dataset!r} (registered: {', '.join(sorted(known))})")
        dataset = known[dataset]
    palette = getattr(dataset, 'PALETTE', None)
    names = getattr(dataset, 'CLASSES', None)
    return ([tuple(int(c) for c in colour) for colour in palette] if palette else None,
            list(names) if names else None)


def full_palette(palette, num_classes):
    """``palette`` (RGB triples, may be None or short) extended with ``default_palette`` colours to at least
    ``num_classes`` entries, as a (N, 3) uint8 array."""
    colours = [tuple(c) for c in palette or []]
    if len(colours) < num_classes:
        colours += default_palette(num_classes)[len(colours):]
    return np.asarray(colours, dtype=np.uint8).reshape(-1, 3)


def class_names_or_ids(names, num_classes):
    """``num_classes`` names: ``names`` (may be None or of another length) cut or completed with ``class N``."""
    names = list(names or [])[:num_classes]
    return names + [f'class {i}' for i in range(len(names), num_classes)]


def config_classes(dic, num_classes=None):
    """The class names and palette of a loaded config (``Config.dic``), one per class of the model.

    Names and colours come from the first of ``val_dataset`` and ``train_dataset`` whose ``type`` is a registered
    dataset declaring ``CLASSES`` or ``PALETTE`` (``dataset_info``); classes it does not name are ``class N``, and
    colours it does not give are ``default_palette``'s (``full_palette``). What ``Segmenter`` colours and names
    classes with, and what ``export.py`` writes into deploy.yaml.

    Args:
        dic (dict): The config.
        num_classes (int, optional): The number of classes. Default: ``model.num_classes`` of the config.

    Returns:
        (list of str, list of RGB tuples), both ``num_classes`` long; (None, None) where the number of classes is
        not known.
    """
    num_classes = num_classes or (dic.get('model') or {}).get('num_classes')
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
        return None, None
    palette = names = None
    known = manager.DATASETS.components_dict
    for key in ('val_dataset', 'train_dataset'):
        section = dic.get(key) or {}
        if isinstance(section, dict) and section.get('type') in known:
            palette, names = dataset_info(section['type'])
            if palette is not None or names is not None:
                break
    colours = [tuple(int(v) for v in c) for c in full_palette(palette, num_classes)[:num_classes]]
    return class_names_or_ids(names, num_classes), colours


def check_classes(class_names, palette, num_classes=None, where='', prefix=''):
    """Check class names and a palette given for a model (``export_model``) or read from a deploy.yaml.

    Args:
        class_names (list|None): A non-empty string per class id.
        palette (list|None): An [r, g, b] per class id, integers 0..255.
        num_classes (int|None): The model's number of classes, where known: both lists must have that length.
        where (str): Start of the error message (e.g. the deploy.yaml path and ': ').
        prefix (str): Before the key names in the message (e.g. 'Deploy.').

    Returns:
        (list of str or None, list of [r, g, b] or None): the values as plain lists.

    Raises:
        UserError: One line naming the key, the entry and the value that is wrong.
    """
    names_key, palette_key = f'{prefix}class_names', f'{prefix}palette'
    names = colours = None
    if class_names is not None:
        if isinstance(class_names, (str, bytes)) or not isinstance(class_names, (list, tuple)):
            raise UserError(f"{where}{names_key}: expected a list of class names, got {class_names!r}")
        for i, name in enumerate(class_names):
            if not isinstance(name, str) or not name.strip():
                raise UserError(f"{where}{names_key}[{i}]: expected a non-empty string, got {name!r}")
        names = [str(name) for name in class_names]
    if palette is not None:
        if isinstance(palette, (str, bytes)) or not isinstance(palette, (list, tuple, np.ndarray)):
            raise UserError(f"{where}{palette_key}: expected a list of [r, g, b] colours, got {palette!r}")
        colours = []
        for i, colour in enumerate(palette):
            values = list(colour) if isinstance(colour, (list, tuple, np.ndarray)) else None
            if values is None or len(values) != 3 or not all(
                    isinstance(v, (int, np.integer)) and not isinstance(v, bool) and 0 <= v <= 255 for v in values):
                shown = [v.item() if isinstance(v, np.generic) else v for v in values] if values else colour
                raise UserError(f"{where}{palette_key}[{i}]: expected [r, g, b] with integers 0..255, got {shown!r}")
            colours.append([int(v) for v in values])
    if names is not None and colours is not None and len(names) != len(colours):
        raise UserError(f"{where}{palette_key} has {len(colours)} colours but {names_key} has {len(names)} names")
    if num_classes:
        for key, values, what in ((names_key, names, 'names'), (palette_key, colours, 'colours')):
            if values is not None and len(values) != num_classes:
                raise UserError(f"{where}{key} has {len(values)} {what} but the model has {num_classes} classes")
    return names, colours


def as_rgb_image(image, what='image'):
    """``image`` as an (H, W, 3) uint8 RGB array, from what notebook code holds: uint8 (or other integer) arrays of
    values 0..255, float arrays in [0, 1] (``plt.imread`` of a PNG; scaled by 255 and rounded), RGB, RGBA (alpha
    dropped), grey (H, W) or (H, W, 1) arrays (repeated into three channels), and PIL images (any mode).

    Raises:
        UserError: One line naming ``what``: an empty image, another shape or dtype, NaN or infinite values, integers
            outside 0..255, floats outside [0, 1].
    """
    if type(image).__module__.startswith('PIL.'):  # PIL: palette, 16-bit, CMYK ... modes become RGB
        image = image if image.mode in ('RGB', 'RGBA', 'L') else image.convert('RGB')
    array = np.asarray(image)
    shape = list(array.shape)
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (1, 3, 4)):
        raise UserError(f"{what} must be an H x W (grey), H x W x 3 (RGB) or H x W x 4 (RGBA) array, got shape "
                        f"{shape}")
    if array.size == 0:
        raise UserError(f"{what} is empty (shape {shape})")
    if array.dtype == np.uint8:
        pass
    elif np.issubdtype(array.dtype, np.integer):
        low, high = int(array.min()), int(array.max())
        if low < 0 or high > 255:
            raise UserError(f"{what}: integer values must be 0..255, got {low}..{high} ({array.dtype})")
        array = array.astype(np.uint8)
    elif np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            raise UserError(f"{what} holds NaN or infinite values")
        low, high = float(array.min()), float(array.max())
        if low < 0 or high > 1:
            raise UserError(f"{what}: float values must be in [0, 1] (as plt.imread gives), got [{low:g}, {high:g}]; "
                            f"pass uint8 for values 0..255")
        array = np.rint(array.astype(np.float64) * 255).astype(np.uint8)
    else:
        raise UserError(f"{what}: unsupported dtype {array.dtype} (expected uint8, integers 0..255 or floats in "
                        f"[0, 1])")
    if array.ndim == 2:
        array = array[:, :, np.newaxis]
    if array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    return np.ascontiguousarray(array[:, :, :3])


def check_mask(mask, shape, what='mask'):
    """``mask`` as an (H, W) integer array of the image's ``shape`` (H, W); a UserError naming ``what`` otherwise."""
    array = np.asarray(mask)
    if array.ndim == 3 and array.shape[0] == 1:  # a label read with a leading channel axis
        array = array[0]
    if array.ndim != 2 or not np.issubdtype(array.dtype, np.integer):
        raise UserError(f"{what} must be an H x W integer array of class ids, got shape {list(array.shape)} and "
                        f"dtype {array.dtype}")
    if tuple(array.shape) != tuple(shape):
        raise UserError(f"{what} is {array.shape[0]}x{array.shape[1]} (HxW) but the image is {shape[0]}x{shape[1]}")
    return array


def color_overlay(image, mask, palette, alpha=0.5):
    """The image with each pixel blended with the colour of its class.

    Args:
        image (ndarray): (H, W, 3) uint8 RGB.
        mask (ndarray): (H, W) integer class ids. Ids outside the palette (e.g. the ignore index 255) and negative
            ids leave their pixels as in the image.
        palette (ndarray|list): (N, 3) RGB colours 0..255, one per class id (``full_palette``).
        alpha (float): Opacity of the class colours, 0 (image only) .. 1 (colours only).

    Returns:
        ndarray: (H, W, 3) uint8 RGB.
    """
    palette = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)
    valid = (mask >= 0) & (mask < len(palette))
    colours = palette[np.where(valid, mask, 0)].astype(np.float32)
    blended = image.astype(np.float32) * (1.0 - alpha) + colours * alpha
    out = np.where(valid[..., None], np.rint(blended), image.astype(np.float32))
    return np.clip(out, 0, 255).astype(np.uint8)


def legend_entries(mask, palette, class_names):
    """(class id, name, RGB colour) for each class id present in ``mask`` that has a colour, in id order; classes
    without a name are called ``class N``."""
    ids = [int(i) for i in np.unique(mask) if 0 <= i < len(palette)]
    names = list(class_names or [])
    return [(i, names[i] if i < len(names) else f'class {i}', tuple(int(c) for c in palette[i])) for i in ids]


def draw_legend(overlay, entries):
    """``overlay`` with a white legend panel on its right: one row per entry, a colour square and the class name.

    The overlay keeps its pixels in ``out[:H, :W]``; where the legend needs more rows than the image is tall, the
    area below the overlay is white.

    Args:
        overlay (ndarray): (H, W, 3) uint8 RGB.
        entries (list): ``legend_entries``.

    Returns:
        ndarray: (max(H, rows), W + panel width, 3) uint8 RGB.
    """
    if not entries:
        return overlay
    height, width = overlay.shape[:2]
    text_width = max(cv2.getTextSize(name, _FONT, _FONT_SCALE, 1)[0][0] for _, name, _ in entries)
    panel_width = _MARGIN + _SWATCH + _MARGIN + text_width + _MARGIN
    out_height = max(height, _MARGIN + _ROW * len(entries))
    out = np.full((out_height, width + panel_width, 3), 255, dtype=np.uint8)
    out[:height, :width] = overlay
    for row, (_, name, colour) in enumerate(entries):
        top = _MARGIN + row * _ROW
        x = width + _MARGIN
        out[top:top + _SWATCH, x:x + _SWATCH] = colour
        cv2.rectangle(out, (x, top), (x + _SWATCH - 1, top + _SWATCH - 1), (0, 0, 0), 1)
        cv2.putText(out, name, (x + _SWATCH + _MARGIN, top + _SWATCH - 2), _FONT, _FONT_SCALE, (0, 0, 0), 1,
                    cv2.LINE_AA)
    return out
