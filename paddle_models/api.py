"""The notebook API: build a model, load weights, predict arrays or files, train, evaluate, export and draw
overlays, all from Python.

    import paddle_models as pm
    pm.train('configs/quickstart.yml', iters=500, do_eval=True, save_dir='output/qs')
    seg = pm.Segmenter('configs/quickstart.yml', 'output/qs/best_model/model.pdparams')
    mask = seg.predict(image)                  # an RGB/RGBA/grey array, a PIL image, or an image file
    plt.imshow(pm.visualize(image, mask, dataset='SyntheticShapes'))

``train``, ``evaluate`` and ``export`` run the command-line tools' own ``main`` (``paddle_models.tools.train``,
``.val``, ``.export``: the logic of the repository's ``train.py``, ``val.py``, ``export.py``) with the keyword
arguments turned into the tools' flags, so the flags, their checks and the engine are the same as on the command
line; they work wherever the package is installed. Mistakes are ``paddle_models.errors.UserError`` with a one-line
message naming the file, key, flag or value.
"""
import importlib
import os

import numpy as np
import paddle
from paddleseg.cvlibs import manager
from paddleseg.transforms import Compose

from paddle_models import image_io
from paddle_models.core import logger
from paddle_models.core.checkpoint import load_model_weights
from paddle_models.core.config import Builder, load_config
from paddle_models.core.logits import aug_logits, predict_logits
from paddle_models.core.predict_files import apply_transforms
from paddle_models.core.visualize import (as_rgb_image, check_mask, color_overlay, config_classes, dataset_info,
                                          draw_legend, full_palette, legend_entries)
from paddle_models.errors import UserError
from paddle_models.pretrained import get_pretrained, is_pretrained_name, list_pretrained, pretrained_weights
from paddle_models.utils.validate import did_you_mean
from paddle_models.weights import load_model_pretrained

__all__ = ['build_model', 'load_weights', 'Segmenter', 'list_pretrained', 'train', 'evaluate', 'export', 'visualize',
           'serve']

# test_config keys that change how an image is predicted (the tools' --aug_eval, --is_slide, ... flags)
_INFERENCE_KEYS = ('aug_eval', 'scales', 'flip_horizontal', 'flip_vertical', 'is_slide', 'crop_size', 'stride')


class _NamedModel:
    """The stand-in for a loaded config when a model is built from its registered name: ``Builder`` reads
    ``dic`` and names ``path`` in its messages."""

    def __init__(self, name):
        self.dic = {}
        self.path = f"build_model({name!r})"


def _is_config_path(value):
    return isinstance(value, os.PathLike) or (isinstance(value, str) and (
        value.endswith(('.yml', '.yaml')) or os.sep in value or os.path.isfile(value)))


def build_model(config_path_or_name, pretrained=False, **overrides):
    """Build a segmentation model from a YAML config, a published checkpoint's name or a registered model name.

    Args:
        config_path_or_name (str): A PaddleSeg-format YAML file (its ``model`` section is built; ``_base_`` files
            are merged as the tools do); the name or alias of a published trained checkpoint
            (``'hardnet_cityscapes_1024x1024_160k'``, ``'segformer_b0_cityscapes'``; see ``list_pretrained``),
            built from its packaged config; or the name of a registered model or model builder (``'HarDNet'``,
            ``'SegFormer_B0'``, ``'SegNeXt_T'``).
        pretrained (bool|str): True, with a checkpoint name: load its trained weights (downloaded once into
            PaddleSeg's cache); with ``num_classes`` overridden as well, the classifier layers keep their initial
            weights and everything else is loaded (the start of fine-tuning). A string is the model's own
            ``pretrained`` argument: whole-model weights as a file, URL or checkpoint name, loaded the same way
            (``build_model('configs/segformer_b0_camvid.yml', pretrained='segformer_b0_cityscapes')``). Default:
            False (the architecture only, or the config's own ``pretrained``).
        **overrides: Model arguments. With a config or a checkpoint name they replace the ``model`` section's
            keys of the same name (``num_classes=5``); with a model name they are the constructor's arguments. A
            dict with a ``type`` (``backbone={'type': 'ResNet18'}``) is built as a component, as in a config.

    Returns:
        paddle.nn.Layer: The model, in training mode as Paddle builds layers.

    Raises:
        UserError: A config that cannot be read, a name that is neither a checkpoint nor a registered model (with
            the closest names), arguments the model does not take, ``pretrained=True`` without a checkpoint name,
            or weights that cannot be had (offline: the URL and the cache path to put the file at).
    """
    if pretrained is None or isinstance(pretrained, (str, os.PathLike)):  # the model's own `pretrained` argument
        overrides['pretrained'], pretrained = pretrained if pretrained is None else os.fspath(pretrained), False
    elif not isinstance(pretrained, bool):
        raise UserError(f"build_model: pretrained must be True, False, or weights (a file, URL or checkpoint "
                        f"name), got {pretrained!r}")
    name = config_path_or_name
    if is_pretrained_name(name) and not os.path.isfile(name):
        entry = get_pretrained(name)
        cfg = load_config(entry['config'], require=('model',))
        model = Builder(cfg).build_component(dict(cfg.dic['model'], **overrides), 'model')
        if pretrained:
            load_model_pretrained(model, entry['url'])
        return model
    if pretrained:
        if not _is_config_path(name):
            get_pretrained(name)  # a one-line error with the closest names
        raise UserError(f"build_model: pretrained=True needs the name of a published checkpoint, got {name!r} "
                        f"(paddle_models.list_pretrained() lists them)")
    if _is_config_path(name):
        cfg = load_config(os.fspath(name), require=('model',))
        builder = Builder(cfg)
        model_cfg = dict(cfg.dic['model'], **overrides)
        return builder.build_component(model_cfg, 'model')
    known = manager.MODELS.components_dict
    if not isinstance(name, str) or name not in known:
        checkpoints = [e[key] for e in list_pretrained() for key in ('name', 'alias')]
        raise UserError(f"build_model: {name!r} is neither a config file (.yml), a published checkpoint nor a "
                        f"registered model{did_you_mean(str(name), list(known) + checkpoints)}")
    return Builder(_NamedModel(name)).build_component(dict(overrides, type=name), 'model')


def load_weights(model, path):
    """Load a ``.pdparams`` file (or a checkpoint folder holding ``model.pdparams``) into ``model`` strictly.

    The file is read without running code in it (``paddle_models.core.checkpoint.load_model_weights``).

    Args:
        model (paddle.nn.Layer): The model, e.g. from ``build_model``.
        path (str): The weights: ``output/best_model/model.pdparams`` or ``output/iter_500``.

    Returns:
        The same ``model``, for chaining.

    Raises:
        UserError: A missing or unreadable file, or keys / shapes that do not fit the model (the first named).
    """
    return load_model_weights(model, os.fspath(path), what='weights')


def _read_rgb(image, what='image'):
    """An image file (read as ``cv2.imread`` reads it, then flipped to RGB), an array or a PIL image
    (``as_rgb_image``: uint8 or [0, 1] floats, RGB, RGBA or grey), as (H, W, 3) uint8 RGB."""
    if isinstance(image, (str, os.PathLike)):
        return np.ascontiguousarray(image_io.read_image(os.fspath(image))[..., ::-1])
    return as_rgb_image(image, what)


class Segmenter:
    """A model with its weights and its config's val transforms, ready to predict images.

    Args:
        config (str): The YAML config the model was trained with: its ``model`` section is built, its
            ``val_dataset.transforms`` preprocess every image (default: ``Normalize`` only), its ``test_config``
            (``aug_eval``, ``scales``, flips, ``is_slide``/``crop_size``/``stride``) says how to predict, and its
            dataset's ``PALETTE`` / ``CLASSES`` colour and name the classes in ``visualize``.
        weights (str, optional): A ``.pdparams`` file or checkpoint folder. None keeps the initial weights (with
            a warning: predictions are then meaningless, which is only useful to try the plumbing).
        opts (list[str], optional): ``key=value`` overrides of the config, as the tools' ``--opts``.

    Attributes:
        model: The ``paddle.nn.Layer``, in eval mode.
        num_classes (int): The model's number of classes.
        palette (list): RGB colour per class id; class_names (list): name per class id.
        ignore_index (int): The datasets' label value of unlabelled pixels (255 unless the config sets one).
    """

    def __init__(self, config, weights=None, opts=None):
        cfg = load_config(os.fspath(config), opts, require=('model',))
        self.config = cfg
        builder = Builder(cfg)
        self.model = builder.model()
        if weights is not None:
            load_weights(self.model, weights)
        else:
            logger.warning(f"Segmenter({config!r}): no weights given, the model keeps its initial weights")
        self.model.eval()
        self.transforms = Compose(builder.val_transforms())
        test_config = cfg.dic.get('test_config') or {}
        self.options = {k: v for k, v in test_config.items() if k in _INFERENCE_KEYS}
        if self.options.get('is_slide') and (not self.options.get('crop_size') or not self.options.get('stride')):
            raise UserError(f"{config}: test_config.is_slide needs test_config.crop_size and test_config.stride")
        self.num_classes = cfg.dic['model'].get('num_classes') or 256
        sections = [cfg.dic.get(key) or {} for key in ('val_dataset', 'train_dataset')]
        self.ignore_index = next((s['ignore_index'] for s in sections if 'ignore_index' in s), 255)
        self.class_names, self.palette = config_classes(cfg.dic, self.num_classes)

    @classmethod
    def from_pretrained(cls, name, opts=None):
        """The segmenter of a published trained checkpoint: its packaged config (architecture, val transforms,
        test_config, the dataset's class names and palette) and its weights, downloaded once into PaddleSeg's
        cache (``$SEG_HOME/pretrained_model/<name>/model.pdparams``).

        Args:
            name (str): The checkpoint's name or alias (``'segformer_b0_cityscapes_1024x1024_160k'``,
                ``'segformer_b0_cityscapes'``); ``paddle_models.list_pretrained()`` lists them.
            opts (list[str], optional): ``key=value`` overrides of the packaged config
                (``['test_config.is_slide=False']``).

        Raises:
            UserError: An unknown name (with the closest ones), or weights that cannot be downloaded (the URL and
                the cache path to put the file at by hand).
        """
        entry = get_pretrained(name)
        return cls(entry['config'], pretrained_weights(name), opts=opts)

    def preprocess(self, image):
        """The network input for one image: (C, H, W) float32 after the val transforms, and the transforms'
        record of resizes and paddings (``trans_info``) that maps the output back to the image's size.

        Args:
            image: An image file (str or path), an **RGB** array (as PIL, matplotlib and most notebook code
                hold images) or a PIL image: uint8, other integers 0..255 or floats in [0, 1] (``plt.imread`` of a
                PNG), (H, W, 3) RGB, (H, W, 4) RGBA (alpha dropped) or (H, W) grey (see
                ``core.visualize.as_rgb_image``). Files are read as the tools read them (``cv2.imread``, BGR) and arrays
                are flipped to BGR, so that PaddleSeg's transforms (which turn BGR into RGB) see both alike: an
                array and the same image saved to a lossless file give the same input.
        """
        bgr = _read_rgb(image)[..., ::-1]
        what = os.fspath(image) if isinstance(image, (str, os.PathLike)) else f"image of shape {list(bgr.shape)}"
        data = apply_transforms(self.transforms, bgr, what)
        return np.ascontiguousarray(data['img'], dtype='float32'), data['trans_info']

    def _predict_inputs(self, inputs, trans_info):
        """Class maps (N, H, W) int64 for a stacked batch of preprocessed images of one size."""
        options = self.options
        with paddle.no_grad():
            x = paddle.to_tensor(np.stack(inputs))
            if options.get('aug_eval'):
                logit = aug_logits(self.model, x, trans_info, options.get('scales', 1.0),
                                   options.get('flip_horizontal', False), options.get('flip_vertical', False),
                                   options.get('is_slide', False), options.get('crop_size'), options.get('stride'))
            else:
                logit = predict_logits(self.model, x, trans_info, options.get('is_slide', False),
                                       options.get('crop_size'), options.get('stride'))
            return paddle.argmax(logit, axis=1).numpy().astype('int64')

    def predict(self, image):
        """The class map of one image.

        Args:
            image: An image file, an RGB/RGBA/grey array or a PIL image (see ``preprocess``).

        Returns:
            ndarray: (H, W) int64 class ids, at the image's size.

        Raises:
            UserError: An unreadable or truncated file; an empty array, one holding NaN, values out of range, or
                of another shape or dtype.
        """
        chw, trans_info = self.preprocess(image)
        return self._predict_inputs([chw], trans_info)[0]

    def predict_batch(self, images, batch_size=4):
        """The class maps of several images, running up to ``batch_size`` images of the same size through the
        model at once (images of other sizes run in their own batches).

        Args:
            images (list): Image files, arrays and/or PIL images (see ``preprocess``).
            batch_size (int): Most images per forward pass.

        Returns:
            list[ndarray]: (H, W) int64 class maps, in the order of ``images``.
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise UserError(f"predict_batch: batch_size must be a positive integer, got {batch_size!r}")
        images = list(images)
        results = [None] * len(images)
        for start in range(0, len(images), batch_size):
            groups = {}  # same input shape and same trans_info: one forward pass
            for index in range(start, min(start + batch_size, len(images))):
                chw, trans_info = self.preprocess(images[index])
                key = (chw.shape, repr(trans_info))
                groups.setdefault(key, (trans_info, [], []))
                groups[key][1].append(index)
                groups[key][2].append(chw)
            for trans_info, indices, inputs in groups.values():
                for index, mask in zip(indices, self._predict_inputs(inputs, trans_info)):
                    results[index] = mask
        return results

    def visualize(self, image, mask=None, alpha=0.5, legend=True):
        """``visualize`` with this config's palette and class names; ``mask`` None predicts it first."""
        rgb = _read_rgb(image)
        if mask is None:
            mask = self.predict(rgb)
        return visualize(rgb, mask, alpha=alpha, palette=self.palette, class_names=self.class_names,
                         legend=legend, ignore_index=self.ignore_index)


def visualize(image, mask, alpha=0.5, dataset=None, palette=None, class_names=None, legend=True, ignore_index=255):
    """The image with its class map blended in, in the dataset's colours, and a legend of the classes shown.

    Args:
        image: An image file, an RGB/RGBA/grey array or a PIL image (see ``Segmenter.preprocess``).
        mask (ndarray): (H, W) integer class ids (``Segmenter.predict``'s output, or a label). Ids without a
            colour (the ignore index 255) leave their pixels unchanged.
        alpha (float): Opacity of the class colours: 0 shows the image only, 1 the colours only. Default 0.5.
        dataset: Where the palette and class names come from: a registered dataset name (``'CamVid'``,
            ``'SyntheticShapes'``), class or object. Default: none (PASCAL VOC's colour map, classes named
            ``class N``).
        palette (list): RGB colour per class id, replacing the dataset's (missing entries: the default colours).
        class_names (list): Name per class id, replacing the dataset's.
        legend (bool): Draw the legend: a white panel right of the overlay with a colour square and the name of
            each class present in ``mask``. The panel widens the result, and where it needs more rows than the
            image is tall it is extended with white below the overlay; ``out[:H, :W]`` is always the overlay.
            False returns the (H, W, 3) overlay alone.
        ignore_index (int): The label value of unlabelled pixels (PaddleSeg's 255): left uncoloured and out of
            the legend.

    Returns:
        ndarray: uint8 RGB, (H, W, 3) without the legend, else (max(H, legend rows), W + panel width, 3). Ready for
        ``plt.imshow`` or ``PIL.Image.fromarray``.

    Raises:
        UserError: A bad image, a mask that is not an integer array of the image's size, an alpha outside 0..1.
    """
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 <= alpha <= 1:
        raise UserError(f"visualize: alpha must be a number in [0, 1], got {alpha!r}")
    rgb = _read_rgb(image)
    mask = check_mask(mask, rgb.shape[:2])
    mask = np.where(mask == ignore_index, -1, mask)  # never coloured, whatever the palette's length
    own_palette, own_names = dataset_info(dataset)
    colours = full_palette(palette if palette is not None else own_palette, int(mask.max(initial=-1)) + 1)
    names = list(class_names) if class_names is not None else own_names
    out = color_overlay(rgb, mask, colours, alpha)
    return draw_legend(out, legend_entries(mask, colours, names)) if legend else out


# --- the command-line tools, from Python ------------------------------------------------------------------------

def flags_to_argv(flags):
    """The command-line arguments that the keyword arguments ``flags`` stand for.

    ``name=True`` is the switch ``--name``; ``False`` and None leave the flag out (the tool's default); a list or
    tuple gives its items as separate values (``scales=[0.75, 1.0]`` is ``--scales 0.75 1.0``, ``opts=['a=b']``
    is ``--opts a=b``); anything else is its ``str()``.
    """
    argv = []
    for name, value in flags.items():
        if value is None or value is False:
            continue
        flag = f"--{name}"
        if value is True:
            argv.append(flag)
        elif isinstance(value, (list, tuple)):
            argv += [flag] + [str(v) for v in value]
        else:
            argv += [flag, str(os.fspath(value) if isinstance(value, os.PathLike) else value)]
    return argv


def _run_tool(function, tool, fixed, flags):
    """Run ``paddle_models.tools.<tool>``'s ``main`` with the arguments ``fixed`` (a list: the function's own, e.g.
    ``--config``) and the keyword arguments ``flags`` as flags, and return what it returns.

    Each keyword must name one of the tool's flags exactly (argparse would take ``iter=5`` as ``--iters``): an
    unknown one is a UserError naming it and the closest flags; one the function sets itself too."""
    from paddle_models.core.cli import option_strings

    module = importlib.import_module(f"paddle_models.tools.{tool}")  # imported on first use: import stays light
    known = [option[2:] for option in option_strings(module.build_parser()) if option.startswith('--')]
    for name in flags:
        if name not in known or name == 'help':
            raise UserError(f"{function}(): unknown keyword argument {name!r}"
                            f"{did_you_mean(name, [k for k in known if k != 'help'])}; the keyword arguments are the "
                            f"tool's flags: python -m paddle_models.tools.{tool} --help")
        if f"--{name}" in fixed:
            raise UserError(f"{function}(): {name} is set by {function}()'s own arguments; pass it there")
    return module.main(list(fixed) + flags_to_argv(flags))


def train(config, **flags):
    """Train as ``python train.py --config CONFIG --flag value ...`` does, in this process.

    Args:
        config (str): The YAML config.
        **flags: ``train.py``'s flags as keyword arguments (see ``flags_to_argv``): ``iters=500``,
            ``batch_size=8``, ``do_eval=True``, ``save_dir='output/run'``, ``save_interval=100``, ``seed=0``,
            ``use_vdl=True``, ``opts=['model.num_classes=5']``, ...

    Returns:
        dict: The training summary: ``last_iter``, ``best_miou``, ``best_iter``, ``last_loss``, ...

    Raises:
        UserError: As the command line reports it (an unknown flag, a bad config or value).
    """
    return _run_tool('train', 'train', ['--config', os.fspath(config)], flags)


def evaluate(config, weights, **flags):
    """Evaluate as ``python val.py --config CONFIG --model_path WEIGHTS ...`` does, in this process.

    Args:
        config (str): The YAML config (its ``val_dataset`` is evaluated).
        weights (str): A ``.pdparams`` file or checkpoint folder (``--model_path``).
        **flags: ``val.py``'s other flags: ``aug_eval=True``, ``scales=[0.75, 1.0]``, ``is_slide=True``,
            ``crop_size=[256, 256]``, ``stride=[128, 128]``, ``auc_roc=True``, ``opts=[...]``.

    Returns:
        dict: ``miou``, ``class_iou``, ``acc``, ``kappa``, ``mdice``, ``confusion_matrix``, ... (see
        ``paddle_models.core.evaluate.evaluate``).
    """
    _check_weights('evaluate', weights)
    return _run_tool('evaluate', 'val', ['--config', os.fspath(config), '--model_path', os.fspath(weights)], flags)


def export(config, weights=None, save_dir='output/inference_model', **flags):
    """Export for Paddle Inference as ``python export.py ...`` does, in this process.

    Args:
        config (str): The YAML config.
        weights (str, optional): ``--model_path``; None exports the initial weights (with a warning).
        save_dir (str): Where ``model.json`` / ``model.pdmodel``, ``model.pdiparams`` and ``deploy.yaml`` go.
        **flags: ``export.py``'s other flags: ``input_shape=[1, 3, 512, 512]``, ``output_op='softmax'``, ...

    Returns:
        dict: ``model``, ``params``, ``deploy_yaml`` (paths), ``onednn`` (whether Paddle Inference ran the program
        with oneDNN), ... (see ``paddle_models.core.export.export_model``).
    """
    if weights is not None:
        _check_weights('export', weights)
    fixed = ['--config', os.fspath(config), '--save_dir', os.fspath(save_dir)]
    return _run_tool('export', 'export', fixed + (['--model_path', os.fspath(weights)] if weights is not None else []),
                     flags)


def _serve_module():
    """The repository's ``deploy/python/serve.py`` (beside the package's folder), loaded by path: the server
    stands alone (it does not import paddle_models), so it ships with the repository, not in the package."""
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'deploy', 'python', 'serve.py')
    if not os.path.isfile(path):
        raise UserError(f"serve(): {path} not found: the server ships with the repository (deploy/python/serve.py), "
                        f"not with the installed package; run it from a checkout of the repository")
    import importlib.util

    spec = importlib.util.spec_from_file_location('paddle_models_serve', path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except ImportError as err:
        raise UserError(f"serve(): the server needs {err.name or err}: pip install fastapi uvicorn python-multipart "
                        f"(or pip install 'paddle-models[serve]')") from None
    return module


def serve(config, host='127.0.0.1', port=8866, **flags):
    """Serve the export ``config`` (its deploy.yaml) over HTTP as ``python deploy/python/serve.py --config CONFIG
    --host HOST --port PORT ...`` does, in this process, until SIGTERM or Ctrl-C (docs/serving.md).

    Args:
        config (str): deploy.yaml of an export (``export()``, ``export.py``).
        host (str): Address to listen on. Default: 127.0.0.1.
        port (int): Port. Default: 8866.
        **flags: serve.py's other flags: ``max_batch_size=8``, ``batch_timeout_ms=10``, ``queue_size=64``,
            ``max_body_mb=20``, ``max_pixels=40_000_000``, ``allow_url=True``, ``backend='onnxruntime'``,
            ``cpu_threads=2``, ``workers=2``, ...

    Returns:
        int: 0 after a graceful shutdown.

    Raises:
        UserError: An unknown keyword, a bad value, a bad deploy.yaml, or no serve.py (a package installed without
            the repository).
    """
    import argparse

    module = _serve_module()
    actions = {a.dest: a for a in module.build_parser()._actions if a.option_strings and a.dest != 'help'}
    argv = ['--config', os.fspath(config), '--host', str(host), '--port', str(port)]
    for name, value in flags.items():
        if name not in actions or name in ('config', 'host', 'port'):
            known = sorted(k for k in actions if k not in ('config', 'host', 'port'))
            raise UserError(f"serve(): unknown keyword argument {name!r}{did_you_mean(name, known)}; the keyword "
                            f"arguments are serve.py's flags: python deploy/python/serve.py --help")
        if isinstance(actions[name], argparse._StoreTrueAction):
            argv += [f"--{name}"] if value else []
        elif value is not None:
            argv += [f"--{name}", str(os.fspath(value) if isinstance(value, os.PathLike) else value)]
    try:
        return module.run(argv)
    except module.UserError as err:  # serve.py's own UserError (it stands alone): the package's, same line
        raise UserError(str(err)) from None


def _check_weights(function, weights):
    """A UserError naming ``function``'s ``weights`` argument where the file or folder does not exist (the tool
    itself would name its flag, ``--model_path``)."""
    if not isinstance(weights, (str, os.PathLike)) or not os.path.exists(weights):
        raise UserError(f"{function}(): weights not found: {weights}")
