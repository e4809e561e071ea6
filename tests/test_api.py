"""The notebook API (paddle_models.build_model, load_weights, Segmenter, train, evaluate, visualize) and the VisualDL
images that evaluation logs."""
import os

import cv2
import numpy as np
import paddle
import pytest

import paddle_models as pm
from paddle_models.core.evaluate import evaluate as core_evaluate
from paddle_models.datasets.synthetic import SyntheticShapes
from paddle_models.errors import UserError
from paddleseg.cvlibs import manager
from paddleseg.transforms import Normalize

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUICKSTART = os.path.join(REPO, 'configs', 'quickstart.yml')
# the quickstart HarDNet's widths, as configs/quickstart.yml gives them
QUICKSTART_MODEL = dict(num_classes=5, stem_channels=[8, 8, 16, 16], ch_list=[24, 32, 48, 64], gr=[6, 8, 10, 12],
                        n_layers=[2, 2, 4, 4])
# small synthetic datasets so that training and evaluation take a second
SMALL_DATA = ['train_dataset.num_samples=8', 'val_dataset.num_samples=4', 'train_dataset.image_size=32',
              'val_dataset.image_size=32']


def _count(model):
    return sum(int(np.prod(p.shape)) for p in model.parameters())


def _rgb_image(size=48, seed=0):
    """A synthetic RGB uint8 image whose three channels differ (so a channel-order slip shows)."""
    image, _ = SyntheticShapes('val', image_size=size, seed=seed).generate(0)
    return np.ascontiguousarray(image)


# --- build_model / load_weights ----------------------------------------------------------------------------------

def test_build_model_from_config_path_matches_the_class_built_directly():
    paddle.seed(0)
    model = pm.build_model(QUICKSTART)
    reference = manager.MODELS.components_dict['HarDNet'](**QUICKSTART_MODEL)
    assert type(model).__name__ == 'HarDNet'
    assert _count(model) == _count(reference)
    assert [list(v.shape) for v in model.state_dict().values()] == \
        [list(v.shape) for v in reference.state_dict().values()]


def test_build_model_overrides_replace_config_keys():
    model = pm.build_model(QUICKSTART, num_classes=3)
    model.eval()
    out = model(paddle.rand([1, 3, 32, 32]))[0]
    assert out.shape == [1, 3, 32, 32]


def test_build_model_by_registered_name_with_keyword_arguments():
    model = pm.build_model('SegFormer_B0', num_classes=4)
    reference = manager.MODELS.components_dict['SegFormer_B0'](num_classes=4)
    assert type(model).__name__ == 'SegFormer'
    assert _count(model) == _count(reference)
    model.eval()
    assert model(paddle.rand([1, 3, 64, 64]))[0].shape == [1, 4, 64, 64]


def test_build_model_by_name_builds_nested_components():
    model = pm.build_model('FCN', num_classes=2, backbone={'type': 'HRNet_W18_Small_V1'}, backbone_indices=[-1])
    assert type(model.backbone).__name__ == 'HRNet'


@pytest.mark.parametrize('call, message', [
    (lambda: pm.build_model('HardNet'),
     "build_model: 'HardNet' is neither a config file (.yml), a published checkpoint nor a registered model "
     "(did you mean HarDNet?)"),
    (lambda: pm.build_model('HarDNet', foo=1),
     "build_model('HarDNet'): model.foo: HarDNet takes no argument 'foo'"),
    (lambda: pm.build_model('configs/missing.yml'), "config file not found: configs/missing.yml"),
    (lambda: pm.build_model('FCN', num_classes=2, backbone={'type': 'HRNet_W99'}),
     "build_model('FCN'): unknown type 'HRNet_W99' at model.backbone.type"),
])
def test_build_model_errors_are_one_line(call, message):
    with pytest.raises(UserError) as err:
        call()
    assert str(err.value) == message


def test_load_weights_round_trip_and_mismatch(tmp_path):
    paddle.seed(1)
    source = pm.build_model(QUICKSTART)
    path = str(tmp_path / 'model.pdparams')
    paddle.save(source.state_dict(), path)
    paddle.seed(2)
    target = pm.build_model(QUICKSTART)
    assert pm.load_weights(target, path) is target
    source.eval()
    target.eval()
    x = paddle.rand([1, 3, 32, 32])
    np.testing.assert_array_equal(source(x)[0].numpy(), target(x)[0].numpy())

    other = pm.build_model(QUICKSTART, num_classes=3)
    with pytest.raises(UserError) as err:
        pm.load_weights(other, path)
    assert str(err.value).startswith(f"{path} does not fit the model: 2 shape mismatches, e.g. ")
    with pytest.raises(UserError) as err:
        pm.load_weights(other, str(tmp_path / 'none.pdparams'))
    assert str(err.value) == f"weights not found: {tmp_path / 'none.pdparams'}"


# --- Segmenter ---------------------------------------------------------------------------------------------------

@pytest.fixture(scope='module')
def segmenter(tmp_path_factory):
    paddle.seed(3)
    model = pm.build_model(QUICKSTART)
    path = str(tmp_path_factory.mktemp('weights') / 'model.pdparams')
    paddle.save(model.state_dict(), path)
    return pm.Segmenter(QUICKSTART, path)


def test_segmenter_input_is_the_rgb_image_normalized_by_the_val_transforms(segmenter):
    image = _rgb_image()
    chw, trans_info = segmenter.preprocess(image)
    # configs/quickstart.yml's val transforms are Normalize() (mean = std = 0.5) on RGB
    expected = ((image.astype(np.float32) / 255 - 0.5) / 0.5).transpose(2, 0, 1)
    np.testing.assert_allclose(chw, expected, atol=1e-6)
    assert trans_info == []


def test_segmenter_predict_array_equals_model_argmax(segmenter):
    image = _rgb_image()
    mask = segmenter.predict(image)
    assert mask.shape == image.shape[:2] and mask.dtype == np.int64
    x = paddle.to_tensor(((image.astype(np.float32) / 255 - 0.5) / 0.5).transpose(2, 0, 1)[None])
    with paddle.no_grad():
        expected = paddle.argmax(segmenter.model(x)[0], axis=1).numpy()[0]
    np.testing.assert_array_equal(mask, expected)


def test_segmenter_predict_path_equals_predict_array(segmenter, tmp_path):
    image = _rgb_image(seed=5)
    path = str(tmp_path / 'image.png')
    cv2.imwrite(path, image[..., ::-1])  # a lossless file of the same RGB image
    np.testing.assert_array_equal(segmenter.preprocess(path)[0], segmenter.preprocess(image)[0])
    np.testing.assert_array_equal(segmenter.predict(path), segmenter.predict(image))
    # the same pixels with red and blue swapped are another input: channel order is not lost on the way
    assert not np.array_equal(segmenter.preprocess(image[..., ::-1].copy())[0], segmenter.preprocess(path)[0])


def test_segmenter_predict_batch_equals_single_predictions(segmenter):
    images = [_rgb_image(48, 0), _rgb_image(32, 1), _rgb_image(48, 2), _rgb_image(48, 3)]
    masks = segmenter.predict_batch(images, batch_size=3)
    assert [m.shape for m in masks] == [(48, 48), (32, 32), (48, 48), (48, 48)]
    for image, mask in zip(images, masks):
        np.testing.assert_array_equal(mask, segmenter.predict(image))


def test_segmenter_resizing_val_transforms_give_a_map_of_the_image_size(tmp_path):
    config = tmp_path / 'resize.yml'
    config.write_text(open(QUICKSTART).read().replace(
        "  transforms:\n    - type: Normalize\n  mode: val",
        "  transforms:\n    - type: Resize\n      target_size: [32, 32]\n    - type: Normalize\n  mode: val"))
    segmenter = pm.Segmenter(str(config))
    chw, trans_info = segmenter.preprocess(_rgb_image(48))
    assert chw.shape == (3, 32, 32) and trans_info == [('resize', (48, 48))]
    assert segmenter.predict(_rgb_image(48)).shape == (48, 48)


def test_segmenter_takes_what_notebooks_hold(segmenter, tmp_path):
    """plt.imread of a PNG (float RGBA in [0, 1]), PIL images, grey and RGBA arrays, integer arrays: each predicts
    as the uint8 RGB array of the same pixels."""
    import matplotlib.pyplot as plt
    from PIL import Image

    image = _rgb_image(seed=7)
    expected = segmenter.predict(image)
    png = str(tmp_path / 'image.png')
    Image.fromarray(np.dstack([image, np.full(image.shape[:2], 200, np.uint8)])).save(png)  # an RGBA file
    from_plt = plt.imread(png)
    assert from_plt.dtype == np.float32 and from_plt.shape == image.shape[:2] + (4,)
    np.testing.assert_array_equal(segmenter.predict(from_plt), expected)
    np.testing.assert_array_equal(segmenter.predict(Image.open(png)), expected)  # PIL RGBA
    np.testing.assert_array_equal(segmenter.predict(Image.fromarray(image)), expected)  # PIL RGB
    np.testing.assert_array_equal(segmenter.predict(image.astype(np.int64)), expected)
    np.testing.assert_array_equal(segmenter.predict(image.astype(np.float64) / 255), expected)
    # grey: the same value in all three channels
    grey = image[..., 1]
    grey_rgb = np.repeat(grey[..., None], 3, axis=2)
    np.testing.assert_array_equal(segmenter.preprocess(grey)[0], segmenter.preprocess(grey_rgb)[0])
    np.testing.assert_array_equal(segmenter.predict(grey[..., None]), segmenter.predict(grey_rgb))
    np.testing.assert_array_equal(segmenter.predict(Image.fromarray(grey)), segmenter.predict(grey_rgb))
    np.testing.assert_array_equal(segmenter.predict(Image.fromarray(image).convert('P')),
                                  segmenter.predict(np.asarray(Image.fromarray(image).convert('P').convert('RGB'))))
    assert pm.visualize(from_plt, expected, legend=False).shape == image.shape


def _nan_image():
    image = np.zeros((8, 8, 3), np.float32)
    image[2, 3, 1] = np.nan
    return image


@pytest.mark.parametrize('image, message', [
    (np.zeros((0, 0, 3), np.uint8), "image is empty (shape [0, 0, 3])"),
    (np.zeros((0, 0), np.float32), "image is empty (shape [0, 0])"),
    (np.zeros((8, 0, 3), np.uint8), "image is empty (shape [8, 0, 3])"),
    (_nan_image(), "image holds NaN or infinite values"),
    (np.full((8, 8, 3), np.inf, np.float64), "image holds NaN or infinite values"),
    (np.zeros((8, 8, 2), np.uint8),
     "image must be an H x W (grey), H x W x 3 (RGB) or H x W x 4 (RGBA) array, got shape [8, 8, 2]"),
    (np.zeros((1, 8, 8, 3), np.uint8),
     "image must be an H x W (grey), H x W x 3 (RGB) or H x W x 4 (RGBA) array, got shape [1, 8, 8, 3]"),
    (np.zeros(8, np.uint8), "image must be an H x W (grey), H x W x 3 (RGB) or H x W x 4 (RGBA) array, got shape [8]"),
    (np.full((8, 8, 3), 255.0, np.float32),
     "image: float values must be in [0, 1] (as plt.imread gives), got [255, 255]; pass uint8 for values 0..255"),
    (np.full((8, 8, 3), -0.5), "image: float values must be in [0, 1] (as plt.imread gives), got [-0.5, -0.5]; "
                               "pass uint8 for values 0..255"),
    (np.full((8, 8, 3), 300, np.uint16), "image: integer values must be 0..255, got 300..300 (uint16)"),
    (np.full((8, 8), -1, np.int32), "image: integer values must be 0..255, got -1..-1 (int32)"),
    (np.zeros((8, 8, 3), bool), "image: unsupported dtype bool (expected uint8, integers 0..255 or floats in [0, 1])"),
    (np.zeros((8, 8, 3), np.complex64),
     "image: unsupported dtype complex64 (expected uint8, integers 0..255 or floats in [0, 1])"),
])
def test_segmenter_refuses_bad_arrays(segmenter, image, message):
    with pytest.raises(UserError) as err:
        segmenter.predict(image)
    assert str(err.value) == message


def test_segmenter_refuses_missing_and_truncated_files(segmenter, tmp_path):
    missing = str(tmp_path / 'missing.png')
    with pytest.raises(UserError) as err:
        segmenter.predict(missing)
    assert str(err.value) == f"cannot read image: {missing} (No such file or directory)"
    truncated = str(tmp_path / 'cut.png')
    ok, data = cv2.imencode('.png', _rgb_image())
    with open(truncated, 'wb') as f:
        f.write(data.tobytes()[:200])
    with pytest.raises(UserError) as err:
        segmenter.predict_batch([_rgb_image(), truncated])
    assert str(err.value).startswith(f"cannot read image: {truncated}: truncated PNG file")


def test_segmenter_palette_and_names_come_from_the_dataset(segmenter):
    assert segmenter.class_names == list(SyntheticShapes.CLASSES)
    assert segmenter.palette == [tuple(c) for c in SyntheticShapes.PALETTE]


# --- visualize ---------------------------------------------------------------------------------------------------

def test_visualize_blends_the_dataset_palette():
    image = _rgb_image(40)
    mask = np.zeros((40, 40), np.int64)
    mask[:10] = 1
    mask[10:20] = 3
    mask[20:22] = 255  # ignored: left as it is
    out = pm.visualize(image, mask, alpha=0.25, dataset='SyntheticShapes', legend=False)
    assert out.shape == (40, 40, 3) and out.dtype == np.uint8
    palette = np.array(SyntheticShapes.PALETTE, np.float64)
    expected = np.rint(image * 0.75 + palette[np.where(mask == 255, 0, mask)] * 0.25)
    expected[20:22] = image[20:22]
    np.testing.assert_array_equal(out, expected.astype(np.uint8))
    np.testing.assert_array_equal(pm.visualize(image, mask, alpha=0, legend=False), image)


def test_visualize_draws_a_legend_of_the_classes_present():
    image = _rgb_image(40)
    mask = np.zeros((40, 40), np.int32)
    mask[5:15, 5:15] = 2
    mask[30:, 30:] = 4
    overlay = pm.visualize(image, mask, dataset='SyntheticShapes', legend=False)
    out = pm.visualize(image, mask, dataset='SyntheticShapes')
    assert out.dtype == np.uint8 and out.shape[1] > 40 and out.shape[0] == 4 + 16 * 3  # 3 rows, taller than 40
    np.testing.assert_array_equal(out[:40, :40], overlay)
    assert (out[40:, :40] == 255).all()  # white below the overlay
    panel = out[:, 40:].reshape(-1, 3)
    present = {tuple(c) for c in np.unique(panel, axis=0)}
    for class_id in (0, 2, 4):
        assert tuple(SyntheticShapes.PALETTE[class_id]) in present
    for class_id in (1, 3):  # absent from the mask: no swatch
        assert tuple(SyntheticShapes.PALETTE[class_id]) not in present


def test_visualize_default_palette_names_and_errors():
    image = _rgb_image(16)
    out = pm.visualize(image, np.full((16, 16), 2), alpha=1.0, legend=False)
    assert tuple(out[0, 0]) == (128, 128, 0)  # PaddleSeg's colour of class 2 (VOC's of label 3, get_color_map_list)
    with pytest.raises(UserError) as err:
        pm.visualize(image, np.zeros((15, 16), np.int64))
    assert str(err.value) == "mask is 15x16 (HxW) but the image is 16x16"
    with pytest.raises(UserError) as err:
        pm.visualize(image, np.zeros((16, 16), np.float32))
    assert str(err.value) == "mask must be an H x W integer array of class ids, got shape [16, 16] and dtype float32"
    with pytest.raises(UserError) as err:
        pm.visualize(image, np.zeros((16, 16), np.int64), alpha=1.5)
    assert str(err.value) == "visualize: alpha must be a number in [0, 1], got 1.5"
    with pytest.raises(UserError) as err:
        pm.visualize(image, np.zeros((16, 16), np.int64), dataset='Camvid')
    assert str(err.value).startswith("dataset: unknown dataset 'Camvid' (registered: ")


# --- train / evaluate from Python --------------------------------------------------------------------------------

def test_train_evaluate_and_predict_from_python(tmp_path, capsys):
    save_dir = str(tmp_path / 'run')
    summary = pm.train(QUICKSTART, iters=3, batch_size=2, save_interval=3, log_iters=1, do_eval=True, seed=0,
                       save_dir=save_dir, opts=SMALL_DATA)
    assert summary['last_iter'] == 3 and summary['best_iter'] == 3
    assert os.path.isfile(os.path.join(save_dir, 'iter_3', 'model.pdparams'))
    weights = os.path.join(save_dir, 'best_model', 'model.pdparams')
    score = open(os.path.join(save_dir, 'best_model', 'score.txt')).read()
    assert f"miou: {summary['best_miou']:.6f}" in score
    assert 'iter: 3/3' in capsys.readouterr().out  # the training log lines

    result = pm.evaluate(QUICKSTART, weights, opts=SMALL_DATA)
    assert result['miou'] == pytest.approx(summary['best_miou'], abs=1e-12)
    assert result['confusion_matrix'].sum() == 4 * 32 * 32

    # the same mIoU by hand, from the Segmenter's predictions of the same val images
    segmenter = pm.Segmenter(QUICKSTART, weights, opts=SMALL_DATA)
    val = SyntheticShapes('val', num_samples=4, image_size=32)
    samples = [val.generate(i) for i in range(4)]
    preds = np.stack(segmenter.predict_batch([image for image, _ in samples]))
    labels = np.stack([label for _, label in samples]).astype(np.int64)
    ious = []
    for c in range(5):
        union = ((preds == c) | (labels == c)).sum()
        if union:
            ious.append(((preds == c) & (labels == c)).sum() / union)
    cm = result['confusion_matrix']
    assert cm.trace() == (preds == labels).sum()
    assert result['miou'] == pytest.approx(np.mean(ious))  # mean over the classes present


def test_train_refuses_unknown_flags_and_bad_values(tmp_path):
    for name, close in (('itrs', ' (did you mean iters, log_iters?)'), ('iter', ' (did you mean iters, log_iters?)'),
                        ('batch', ' (did you mean batch_size?)'), ('do_evl', ' (did you mean do_eval?)'),
                        ('gpu_count', ''), ('help', '')):
        with pytest.raises(UserError) as err:  # argparse alone would take iter=5 as --iters 5
            pm.train(QUICKSTART, **{name: 5}, save_dir=str(tmp_path / 'x'))
        assert str(err.value) == (f"train(): unknown keyword argument {name!r}{close}; the keyword arguments are the "
                                  f"tool's flags: python -m paddle_models.tools.train --help")
    with pytest.raises(UserError) as err:
        pm.evaluate(QUICKSTART, QUICKSTART, aug_evl=True)
    assert str(err.value).startswith("evaluate(): unknown keyword argument 'aug_evl' (did you mean aug_eval")
    with pytest.raises(UserError) as err:
        pm.evaluate(QUICKSTART, QUICKSTART, model_path='other.pdparams')
    assert str(err.value) == "evaluate(): model_path is set by evaluate()'s own arguments; pass it there"
    with pytest.raises(UserError) as err:
        pm.train(QUICKSTART, iters=0, save_dir=str(tmp_path / 'x'))
    assert str(err.value) == "--iters must be a positive integer, got 0"
    assert not os.path.exists(tmp_path / 'x')
    with pytest.raises(UserError) as err:
        pm.evaluate(QUICKSTART, str(tmp_path / 'none.pdparams'))
    assert str(err.value) == f"evaluate(): weights not found: {tmp_path / 'none.pdparams'}"
    with pytest.raises(UserError) as err:
        pm.export(QUICKSTART, str(tmp_path / 'none.pdparams'), save_dir=str(tmp_path / 'x'))
    assert str(err.value) == f"export(): weights not found: {tmp_path / 'none.pdparams'}"
    for flags, message in (({'num_workers': -1}, "--num_workers must be an integer >= 0, got -1"),
                           ({'save_interval': 0}, "--save_interval must be a positive integer, got 0"),
                           ({'batch_size': 'two'}, "--batch_size must be an integer, got 'two'")):
        with pytest.raises(UserError) as err:
            pm.train(QUICKSTART, save_dir=str(tmp_path / 'x'), **flags)
        assert str(err.value) == message
    assert not os.path.exists(tmp_path / 'x')


def test_flags_to_argv():
    from paddle_models.api import flags_to_argv
    assert flags_to_argv({'do_eval': True, 'use_vdl': False, 'seed': None, 'iters': 5, 'scales': [0.75, 1.0],
                          'opts': ('a=1', 'b=2')}) == \
        ['--do_eval', '--iters', '5', '--scales', '0.75', '1.0', '--opts', 'a=1', 'b=2']


# --- VisualDL images from evaluation ------------------------------------------------------------------------------

class _Recorder:
    """Stands in for visualdl.LogWriter: keeps what add_image receives."""

    def __init__(self):
        self.images = {}

    def add_image(self, tag, img, step, walltime=None, dataformats='HWC'):
        self.images[(tag, step)] = np.array(img)


def test_evaluate_logs_val_images_with_prediction_and_label_overlays():
    paddle.seed(4)
    model = pm.build_model(QUICKSTART)
    dataset = SyntheticShapes('val', transforms=[Normalize()], num_samples=3, image_size=32)
    writer = _Recorder()
    result = core_evaluate(model, dataset, print_detail=False, progress=False, vdl_writer=writer, vdl_step=7,
                           vdl_images=2)
    assert sorted(writer.images) == sorted((f'Evaluate/{kind}_{i}', 7) for kind in ('image', 'prediction', 'label')
                                           for i in (0, 1))
    plain = core_evaluate(model, dataset, print_detail=False, progress=False)
    np.testing.assert_array_equal(result['confusion_matrix'], plain['confusion_matrix'])
    for i in (0, 1):
        image, label = dataset.generate(i)
        np.testing.assert_array_equal(writer.images[(f'Evaluate/image_{i}', 7)], image)
        expected_label = pm.visualize(image, label, dataset='SyntheticShapes')
        np.testing.assert_array_equal(writer.images[(f'Evaluate/label_{i}', 7)], expected_label)
        with paddle.no_grad():
            model.eval()
            x = paddle.to_tensor(np.asarray(dataset[i]['img'])[None])
            pred = paddle.argmax(model(x)[0], axis=1).numpy()[0]
        np.testing.assert_array_equal(writer.images[(f'Evaluate/prediction_{i}', 7)],
                                      pm.visualize(image, pred, dataset='SyntheticShapes'))


def test_evaluate_images_reach_a_visualdl_log(tmp_path, camvid):
    from PIL import Image
    from visualdl import LogReader, LogWriter

    from paddle_models.datasets.camvid import CamVid
    model = pm.build_model('HarDNet', num_classes=11, stem_channels=[8, 8, 16, 16], ch_list=[24, 32, 48, 64],
                           gr=[6, 8, 10, 12], n_layers=[2, 2, 4, 4])
    dataset = CamVid(mode='val', dataset_root=camvid, transforms=[Normalize()])
    dataset.file_list = dataset.file_list[:1]
    writer = LogWriter(str(tmp_path))
    core_evaluate(model, dataset, print_detail=False, progress=False, vdl_writer=writer, vdl_step=3)
    writer.close()
    log = [os.path.join(tmp_path, f) for f in os.listdir(tmp_path) if f.startswith('vdlrecords')]
    reader = LogReader(file_path=log[0])
    assert sorted(reader.get_tags()['image']) == ['Evaluate/image_0', 'Evaluate/label_0', 'Evaluate/prediction_0']
    record = reader.get_data('image', 'Evaluate/image_0')[0]
    assert record.id == 3
    import io
    logged = np.asarray(Image.open(io.BytesIO(record.image.encoded_image_string)).convert('RGB'))
    original = cv2.imread(dataset.file_list[0][0])[..., ::-1]  # the image file, RGB
    np.testing.assert_array_equal(logged, original)
