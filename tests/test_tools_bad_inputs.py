"""Issue 11, items 2-4: wrong-typed ``--opts`` values, a batch size or iteration count that is not a positive
integer, an empty config, truncated images and labels (train, val, predict, infer), images too large for memory,
and predict.py results that always stay inside --save_dir. Each tool error is one line, exit code 2, no traceback."""
import io
import os
import struct
import zlib

import cv2
import numpy as np
import paddle
import pytest
import yaml
from PIL import Image

import predict as predict_tool
from paddle_models import image_io
from paddle_models.core import predict_files as predict_module
from paddle_models.core.config import load_config
from paddle_models.datasets import load_image, load_label
from paddle_models.errors import UserError
from helpers import assert_one_line_error, load_infer, run_tool, tiny_config, tiny_hardnet



def random_image(height, width, seed=0):
    """A smooth-ish random BGR image (JPEG-friendly, non-trivial)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (height // 4 + 1, width // 4 + 1, 3), dtype=np.uint8)
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)


def encode(image, ext, *params):
    ok, buf = cv2.imencode(ext, image, list(params))
    assert ok
    return buf.tobytes()


def save_weights(path):
    paddle.save(tiny_hardnet(seed=0).state_dict(), str(path))
    return path


def assert_error_after_progress(proc, expected, progress):
    """Exit code 2, no traceback, and ``error: EXPECTED`` as the last line, after nothing but progress output
    (lines containing ``progress``: a tool that fails mid-run has shown its progress bar or log lines first)."""
    assert proc.returncode == 2 and 'Traceback' not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines[-1] == f"error: {expected}", proc.stderr
    assert all(progress in line for line in lines[:-1]), proc.stderr


def files_below(root):
    return sorted(os.path.relpath(os.path.join(d, n), root) for d, _, names in os.walk(root) for n in names)


# ---------------------------------------------------------------------------------------------- config and flags

@pytest.mark.paddle26
def test_opts_value_of_the_wrong_type_is_one_line(tmp_path):
    proc = run_tool('train.py', '--config', tiny_config(tmp_path), '--opts', 'iters=abc',
                    '--save_dir', tmp_path / 'out')
    assert_one_line_error(proc, "--opts iters=abc: iters must be an int, got 'abc'")
    assert not os.path.exists(tmp_path / 'out')


@pytest.mark.parametrize('flags, expected', [
    (['--batch_size', '0'], "--batch_size must be a positive integer, got 0"),
    (['--batch_size', '-2'], "--batch_size must be a positive integer, got -2"),
    (['--opts', 'batch_size=two'], "--opts batch_size=two: batch_size must be an int, got 'two'"),
    (['--iters', '0'], "--iters must be a positive integer, got 0"),
    (['--iters', '-5'], "--iters must be a positive integer, got -5"),
])
def test_batch_size_and_iters_must_be_positive(tmp_path, flags, expected):
    proc = run_tool('train.py', '--config', tiny_config(tmp_path), '--save_dir', tmp_path / 'out', '--device', 'cpu',
                    *flags)
    assert_one_line_error(proc, expected)
    assert not os.path.exists(tmp_path / 'out')


def test_empty_config_file(tmp_path):
    empty = tmp_path / 'empty.yml'
    empty.write_text('')
    proc = run_tool('train.py', '--config', empty, '--save_dir', tmp_path / 'out')
    assert_one_line_error(proc, f"{empty}: the config file is empty")
    assert not os.path.exists(tmp_path / 'out')


def test_empty_comment_only_self_including_and_binary_configs(tmp_path):
    comments = tmp_path / 'comments.yml'
    comments.write_text('# only a comment\n\n')
    child = tmp_path / 'child.yml'
    child.write_text('_base_: comments.yml\nbatch_size: 2\n')
    loop = tmp_path / 'loop.yml'
    loop.write_text('_base_: loop.yml\n')
    binary = tmp_path / 'binary.yml'
    binary.write_bytes(b'\xff\xfe\x00\x81')
    for path, expected in ((comments, f"{comments}: the config file is empty"),
                           (child, f"{comments}: the config file is empty"),
                           (loop, f"{loop}: _base_ {loop} includes itself"),
                           (binary, f"{binary}: not a UTF-8 text file")):
        with pytest.raises(UserError) as excinfo:
            load_config(str(path))
        assert str(excinfo.value) == expected


@pytest.mark.paddle26
@pytest.mark.parametrize('opt, expected', [
    ('model.num_classes=abc', "model.num_classes must be a number, got 'abc'"),
    ('model.align_corners=3', "model.align_corners must be true or false, got 3"),  # from HarDNet's default
    ('model.stem_channels=[8,x]', "model.stem_channels must be a number or a list of numbers, got '[8,x]'"),
    ('test_config.crop_size=64', "test_config.crop_size must be a list of numbers, got 64"),
    ('loss.coef.0=a', "loss.coef.0 must be a number, got 'a'"),
    ('test_config.is_slide=1', "test_config.is_slide must be true or false, got 1"),
    ('lr_scheduler.warmup_iters=1.5', "lr_scheduler.warmup_iters must be an int, got 1.5"),
    ('lr_scheduler.power=None', "lr_scheduler.power must be a number, got None"),
    ('optimizer=sgd', "optimizer must be a mapping of keys to values, got 'sgd'"),
    ('iters=[1]', "iters must be an int, got [1]"),
])
def test_opts_kinds(tmp_path, opt, expected):
    with pytest.raises(UserError) as excinfo:
        load_config(tiny_config(tmp_path), [opt])
    assert str(excinfo.value) == f"--opts {opt}: {expected}"


def test_opts_of_the_right_kind_pass(tmp_path):
    config = tmp_path / 'c.yml'
    dic = yaml.safe_load(open(tiny_config(tmp_path)))
    dic['lr_scheduler']['end_lr'] = 0  # YAML's 0 for a float argument
    dic['train_dataset']['mode'] = 'train'
    config.write_text(yaml.safe_dump(dic))
    cfg = load_config(str(config), ['lr_scheduler.end_lr=1e-4', 'train_dataset.mode=2024', 'model.pretrained=None',
                                    'loss.coef.0=0.4', 'test_config.scales=0.75', 'model.align_corners=True',
                                    'batch_size=3', 'model.stem_channels=8'])
    assert cfg.dic['lr_scheduler']['end_lr'] == 1e-4
    assert cfg.dic['train_dataset']['mode'] == '2024'  # a string key keeps the text as written
    assert cfg.dic['model']['pretrained'] is None
    assert cfg.dic['loss']['coef'] == [0.4]
    assert cfg.dic['test_config']['scales'] == 0.75
    assert cfg.dic['model']['align_corners'] is True and cfg.dic['batch_size'] == 3
    assert cfg.dic['model']['stem_channels'] == 8  # "a size or (w, h)": PaddleSeg takes either


def test_batch_size_from_the_config_or_opts_is_checked(tmp_path):
    dic = yaml.safe_load(open(tiny_config(tmp_path)))
    dic['batch_size'] = 0
    config = tmp_path / 'zero.yml'
    config.write_text(yaml.safe_dump(dic))
    require = ('model', 'batch_size', 'iters')
    with pytest.raises(UserError) as excinfo:
        load_config(str(config), require=require)
    assert str(excinfo.value) == f"{config}: batch_size must be a positive integer, got 0"
    with pytest.raises(UserError) as excinfo:
        load_config(tiny_config(tmp_path), ['iters=-1'], require=require)
    assert str(excinfo.value) == "--opts iters=-1: iters must be a positive integer, got -1"
    load_config(str(config), require=('model',))  # a tool that does not use batch_size does not check it


# ------------------------------------------------------------------------------------- the image structure checks

def exif_thumbnail_jpeg(image):
    """A JPEG whose APP1 (EXIF) segment embeds a complete thumbnail JPEG, end-of-image marker included."""
    main = encode(image, '.jpg')
    thumb = encode(image[::8, ::8], '.jpg')
    payload = b'Exif\x00\x00' + thumb
    app1 = b'\xff\xe1' + struct.pack('>H', len(payload) + 2) + payload
    return main[:2] + app1 + main[2:]


def corpus():
    """(name, complete file bytes) for the formats whose structure is checked."""
    image = random_image(24, 40)
    return [
        ('baseline.jpg', encode(image, '.jpg')),
        ('progressive.jpg', encode(image, '.jpg', cv2.IMWRITE_JPEG_PROGRESSIVE, 1)),
        ('restarts.jpg', encode(image, '.jpg', cv2.IMWRITE_JPEG_RST_INTERVAL, 1)),
        ('gray.jpg', encode(image[:, :, 0], '.jpg')),
        ('exif_thumbnail.jpg', exif_thumbnail_jpeg(image)),
        ('rgb.png', encode(image, '.png')),
        ('gray16.png', encode((image[:, :, 0].astype(np.uint16) * 257), '.png')),
        ('rgb.bmp', encode(image, '.bmp')),
        ('odd_width.bmp', encode(image[:, :37], '.bmp')),
    ]


@pytest.mark.paddle26
def test_complete_files_pass_and_every_truncation_is_found():
    infer = load_infer()
    for name, data in corpus():
        decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        assert image_io.image_size(data) == (decoded.shape[1], decoded.shape[0]), name
        assert infer.incomplete_image(data) is None, name
        for cut in range(8, len(data)):  # every prefix past the signature is refused, by both checkers alike
            with pytest.raises(image_io._Broken) as excinfo:
                image_io.image_size(data[:cut])
            assert infer.incomplete_image(data[:cut]) == str(excinfo.value), (name, cut)


def test_bytes_after_the_end_of_image_are_ignored():
    data = corpus()[0][1] + b'\x00' * 7 + b'trailing'
    assert image_io.image_size(data) == (40, 24)


def test_a_thumbnail_end_marker_does_not_hide_a_truncated_scan():
    data = exif_thumbnail_jpeg(random_image(24, 40))
    assert data.find(b'\xff\xd9') < len(data) - 2  # the thumbnail's end-of-image marker comes first
    with pytest.raises(image_io._Broken, match='ends inside the image data'):
        image_io.image_size(data[:-40])


def test_png_crc_mismatch_is_corrupt():
    data = bytearray(encode(random_image(24, 40), '.png'))
    idat = data.find(b'IDAT')
    data[idat + 10] ^= 0xFF
    expected = f"corrupt PNG file (chunk IDAT at byte {idat - 4} fails its CRC check)"
    with pytest.raises(image_io._Broken) as excinfo:
        image_io.image_size(bytes(data))
    assert str(excinfo.value) == expected
    assert load_infer().incomplete_image(bytes(data)) == expected


# ------------------------------------------------------------------------------ pixels equal to the cv2.imread path

@pytest.mark.paddle26
def test_decoded_pixels_equal_cv2_imread(tmp_path):
    image = random_image(30, 44)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotated; cv2.imread applies it
    Image.fromarray(image[:, :, ::-1]).save(tmp_path / 'rotated.jpg', exif=exif.tobytes())
    (tmp_path / 'plain.jpg').write_bytes(encode(image, '.jpg'))
    (tmp_path / 'deep.png').write_bytes(encode(image.astype(np.uint16) * 300, '.png'))
    (tmp_path / 'gray.png').write_bytes(encode(image[:, :, 1], '.png'))
    (tmp_path / 'image.bmp').write_bytes(encode(image, '.bmp'))
    infer = load_infer()
    import paddleseg.transforms as T
    compose = T.Compose([T.Normalize()])
    for name in ('rotated.jpg', 'plain.jpg', 'deep.png', 'gray.png', 'image.bmp'):
        path = str(tmp_path / name)
        for channels, flag in ((3, cv2.IMREAD_COLOR), (1, cv2.IMREAD_GRAYSCALE)):
            expected = cv2.imread(path, flag)
            got = load_image(path, channels)
            assert got.dtype == np.float32
            np.testing.assert_array_equal(got, expected.astype('float32'))
        np.testing.assert_array_equal(predict_module.read_image(path), cv2.imread(path, cv2.IMREAD_COLOR))
        # the deployment runner's input is Compose's own reading of the path
        np.testing.assert_array_equal(infer.preprocess(compose, path)[0], compose({'img': path})['img'])
    assert load_image(str(tmp_path / 'rotated.jpg')).shape == (44, 30, 3)


# -------------------------------------------------------------------------------- truncated files in every tool

def list_dataset(root, bad_image=None, bad_label=None):
    """Four 32x32 JPEG images with PNG labels and train/val lists; ``bad_image``/``bad_label`` (an index) is cut
    to half its bytes."""
    (root / 'img').mkdir(parents=True)
    (root / 'ann').mkdir()
    lines = []
    for i in range(4):
        image = encode(random_image(32, 32, seed=i), '.jpg')
        label = encode(np.full((32, 32), i % 5, np.uint8), '.png')
        (root / 'img' / f'{i}.jpg').write_bytes(image[:len(image) // 2] if i == bad_image else image)
        (root / 'ann' / f'{i}.png').write_bytes(label[:len(label) - 20] if i == bad_label else label)
        lines.append(f'img/{i}.jpg ann/{i}.png')
    for name in ('train.txt', 'val.txt'):
        (root / name).write_text('\n'.join(lines) + '\n')


def dataset_config(tmp_path, root):
    dic = yaml.safe_load(open(tiny_config(tmp_path, batch_size=4, iters=2)))
    for key, mode in (('train_dataset', 'train'), ('val_dataset', 'val')):
        dic[key] = {'type': 'Dataset', 'dataset_root': str(root), 'mode': mode, 'num_classes': 5,
                    f'{mode}_path': f'{mode}.txt', 'transforms': [{'type': 'Normalize'}]}
    path = tmp_path / 'list.yml'
    path.write_text(yaml.safe_dump(dic))
    return path


def test_truncated_jpeg_stops_training(tmp_path):
    root = tmp_path / 'data'
    list_dataset(root, bad_image=2)
    proc = run_tool('train.py', '--config', dataset_config(tmp_path, root), '--save_dir', tmp_path / 'out',
                    '--device', 'cpu')
    assert_one_line_error(proc, f"cannot read image: {root / 'img' / '2.jpg'}: truncated JPEG file (it ends inside "
                                f"the image data, before its end-of-image marker)")
    assert not os.path.exists(tmp_path / 'out') or not files_below(tmp_path / 'out')


def test_truncated_png_label_stops_evaluation(tmp_path):
    root = tmp_path / 'data'
    list_dataset(root, bad_label=1)
    proc = run_tool('val.py', '--config', dataset_config(tmp_path, root), '--device', 'cpu',
                    '--model_path', save_weights(tmp_path / 'm.pdparams'))
    assert_error_after_progress(proc, f"cannot read label: {root / 'ann' / '1.png'}: truncated PNG file (it ends "
                                      f"inside chunk IDAT)", 'evaluate: ')


def test_truncated_label_in_the_loader(tmp_path):
    data = encode(np.zeros((8, 8), np.uint8), '.png')
    (tmp_path / 'l.png').write_bytes(data[:-2])  # PIL alone would read this one: only IEND's CRC is missing
    with pytest.raises(UserError) as excinfo:
        load_label(str(tmp_path / 'l.png'), 5)
    assert str(excinfo.value) == f"cannot read label: {tmp_path / 'l.png'}: truncated PNG file (it ends inside " \
                                 "chunk IEND)"


def test_truncated_jpeg_in_predict_writes_nothing(tmp_path):
    images = tmp_path / 'images'
    images.mkdir()
    good = encode(random_image(32, 32), '.jpg')
    (images / 'a.jpg').write_bytes(good)
    (images / 'b.jpg').write_bytes(good[:-1])  # only the last byte of the end-of-image marker is missing
    proc = run_tool('predict.py', '--config', tiny_config(tmp_path), '--model_path',
                    save_weights(tmp_path / 'm.pdparams'), '--image_path', images, '--save_dir', tmp_path / 'res',
                    '--device', 'cpu')
    assert_one_line_error(proc, f"cannot read image: {images / 'b.jpg'}: truncated JPEG file (it ends inside the "
                                "image data, before its end-of-image marker)")
    assert not os.path.exists(tmp_path / 'res')


@pytest.fixture(scope='module')
def exported(tmp_path_factory):
    from paddle_models.core.export import export_model
    model = tiny_hardnet(seed=0)
    model.eval()
    save_dir = tmp_path_factory.mktemp('export') / 'inference_model'
    return export_model(model, str(save_dir), transforms=[{'type': 'Normalize'}])


def test_truncated_jpeg_in_infer(tmp_path, exported):
    data = encode(random_image(32, 32), '.jpg')
    (tmp_path / 'cut.jpg').write_bytes(data[:len(data) * 2 // 3])
    proc = run_tool(os.path.join('deploy', 'python', 'infer.py'), '--config', exported['deploy_yaml'],
                    '--image_path', tmp_path / 'cut.jpg', '--save_dir', tmp_path / 'res', '--device', 'cpu',
                    '--print_detail', 'False')
    # infer.py logs its progress on stderr (INFO lines); no libjpeg warning shows
    assert_error_after_progress(proc, f"--image_path: cannot read image {tmp_path / 'cut.jpg'}: truncated JPEG file "
                                      "(it ends inside the image data, before its end-of-image marker)", ' INFO ')
    assert not os.path.exists(tmp_path / 'res')  # created only when the first result is written


# ------------------------------------------------------------------------------------------ images too large

def png_header_only(width, height):
    """A PNG whose chunks are complete and whose header says ``width`` x ``height`` (its pixel data is not)."""
    def chunk(kind, payload):
        return struct.pack('>I', len(payload)) + kind + payload + struct.pack('>I', zlib.crc32(kind + payload))
    return (b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', width, height, 8, 2, 0, 0, 0)) +
            chunk(b'IDAT', zlib.compress(b'\x00' * 64)) + chunk(b'IEND', b''))


def test_image_too_large_for_memory_in_predict(tmp_path):
    big = tmp_path / 'huge.png'
    big.write_bytes(png_header_only(70000, 70000))
    proc = run_tool('predict.py', '--config', tiny_config(tmp_path), '--model_path',
                    save_weights(tmp_path / 'm.pdparams'), '--image_path', big, '--save_dir', tmp_path / 'res',
                    '--device', 'cpu')
    assert_one_line_error(proc, f"image too large for memory: {big} is 70000x70000 pixels")
    assert not os.path.exists(tmp_path / 'res')


@pytest.mark.paddle26
def test_predict_limit_follows_available_memory(tmp_path, monkeypatch):
    (tmp_path / 'img.png').write_bytes(encode(random_image(10, 20), '.png'))
    per_pixel = predict_module.bytes_per_pixel(5)
    assert per_pixel == 3 + 3 * 12 + 4 * 5 + 4
    monkeypatch.setattr(image_io, 'available_memory', lambda: per_pixel * 199)  # one pixel short of 20x10
    model = tiny_hardnet()
    with pytest.raises(UserError) as excinfo:
        predict_module.predict(model, str(tmp_path / 'img.png'), [], str(tmp_path / 'res'), num_classes=5,
                               progress=False)
    assert str(excinfo.value) == f"image too large for memory: {tmp_path / 'img.png'} is 20x10 pixels"
    assert not os.path.exists(tmp_path / 'res')
    monkeypatch.setattr(image_io, 'available_memory', lambda: per_pixel * 200)
    written = predict_module.predict(model, str(tmp_path / 'img.png'), [], str(tmp_path / 'res'), num_classes=5,
                                     progress=False)
    assert written == [str(tmp_path / 'res' / 'pseudo_color_prediction' / 'img.png')]


def test_header_sizes_of_other_formats(tmp_path):
    image = random_image(12, 34)
    tiff = io.BytesIO()
    Image.fromarray(image).save(tiff, format='TIFF')
    assert image_io.image_size(tiff.getvalue()) == (34, 12)
    (tmp_path / 'x.webp').write_bytes(encode(image, '.webp'))
    assert image_io.image_size((tmp_path / 'x.webp').read_bytes(), str(tmp_path / 'x.webp')) == (34, 12)
    jpeg = bytearray(encode(image, '.jpg'))
    sof = jpeg.find(b'\xff\xc0')
    jpeg[sof + 5:sof + 9] = struct.pack('>HH', 65535, 65535)  # height, width in the frame header
    (tmp_path / 'big.jpg').write_bytes(bytes(jpeg))
    with pytest.raises(UserError) as excinfo:
        load_image(str(tmp_path / 'big.jpg'))  # beyond OpenCV's decoding limit, in training too
    assert str(excinfo.value) == f"image too large for memory: {tmp_path / 'big.jpg'} is 65535x65535 pixels"


# ----------------------------------------------------------------------------- predict's results stay in save_dir

@pytest.mark.paddle26
def test_predict_results_stay_inside_save_dir(tmp_path):
    elsewhere = tmp_path / 'elsewhere'
    lists = tmp_path / 'lists'
    (lists / 'sub').mkdir(parents=True)
    elsewhere.mkdir()
    image = encode(random_image(16, 16), '.jpg')
    for path in (elsewhere / 'up.jpg', elsewhere / 'abs.jpg', lists / 'sub' / 'in.jpg'):
        path.write_bytes(image)
    (lists / 'list.txt').write_text(f"../elsewhere/up.jpg\n{elsewhere / 'abs.jpg'}\nsub/in.jpg\n")
    before = files_below(tmp_path)
    save_dir = tmp_path / 'out' / 'result'
    written = predict_tool.main(['--config', tiny_config(tmp_path), '--model_path',
                                 str(save_weights(tmp_path / 'm.pdparams')), '--image_path',
                                 str(lists / 'list.txt'), '--save_dir', str(save_dir), '--device', 'cpu'])
    outside = str(elsewhere).lstrip(os.sep)  # images outside the list's folder keep their absolute path, rootless
    expected = [os.path.join(outside, 'up'), os.path.join(outside, 'abs'), os.path.join('sub', 'in')]
    assert written == [str(save_dir / 'pseudo_color_prediction' / (name + '.png')) for name in expected]
    new = sorted(set(files_below(tmp_path)) - set(before) - {'tiny.yml', 'm.pdparams'})
    assert new == sorted(os.path.join('out', 'result', kind, name + suffix) for name in expected
                         for kind, suffix in (('pseudo_color_prediction', '.png'), ('added_prediction', '.jpg')))


def test_output_name():
    base = os.path.join(os.sep, 'data', 'lists')
    assert predict_module.output_name(os.path.join(base, 'a', 'x.jpg'), base) == os.path.join('a', 'x')
    assert predict_module.output_name(os.path.join(base, '..', 'x.jpg'), base) == os.path.join('data', 'x')
    assert predict_module.output_name(os.path.join(os.sep, 'y', 'z.png'), base) == os.path.join('y', 'z')
    assert predict_module.output_name(os.path.join(base, '..x.jpg'), base) == '..x'
    assert predict_module.output_name('x.jpg', '') == 'x'
