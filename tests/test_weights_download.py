"""``pretrained:`` URLs resolved through PaddleSeg's weight cache (``paddle_models.weights.resolve_pretrained``).

Every download comes from an ``http.server`` on 127.0.0.1 started by the test; ``SEG_HOME`` points at a tmp folder.
"""
import io
import os
import tarfile
import zipfile

import numpy as np
import paddle
import pytest
from paddleseg.cvlibs import manager

import paddle_models  # noqa: F401  (registers our components in PaddleSeg's manager)
from conftest import REPO, LocalFileServer as _Server
from helpers import TINY_HARDNET
from paddle_models.errors import UserError
from paddle_models.models.hardnet import HarDNet
from paddle_models.weights import pretrained_cache_path, resolve_pretrained



@pytest.fixture
def site(tmp_path, monkeypatch):
    """(folder served, SEG_HOME, server)."""
    www = tmp_path / 'www'
    www.mkdir()
    home = tmp_path / 'seg_home'
    monkeypatch.setenv('SEG_HOME', str(home))
    server = _Server(www)
    yield www, home, server
    server.stop()


@pytest.fixture(scope='module')
def mit_weights(tmp_path_factory):
    """(state dict as numpy, its .pdparams bytes) of a randomly initialised MiT-B0 backbone."""
    paddle.seed(11)
    model = manager.BACKBONES['MixVisionTransformer_B0']()
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    path = tmp_path_factory.mktemp('mit') / 'model.pdparams'
    paddle.save(model.state_dict(), str(path))
    return state, path.read_bytes()


def _tar_gz(path, members):
    """Write a .tar.gz of ``{name: bytes}`` (fast compression)."""
    with tarfile.open(path, 'w:gz', compresslevel=1) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def _cache_listing(home):
    """Every path under $SEG_HOME/pretrained_model, relative to it (temp files included)."""
    root = home / 'pretrained_model'
    return sorted(str(p.relative_to(root)) for p in root.rglob('*')) if root.exists() else []


def _assert_same_state(model, state):
    own = model.state_dict()
    assert sorted(own) == sorted(state)
    for key, value in state.items():
        np.testing.assert_array_equal(own[key].numpy(), value, err_msg=key)


@pytest.mark.paddle26
def test_cache_paths_match_paddleseg(tmp_path, monkeypatch):
    """Our cache path for PaddleSeg's own config URLs is the path PaddleSeg 2.8.0's downloader returns."""
    import paddleseg.utils.utils as seg_utils

    home = tmp_path / 'home'
    monkeypatch.setenv('SEG_HOME', str(home))
    monkeypatch.setattr(seg_utils.seg_env, 'PRETRAINED_MODEL_HOME', str(home / 'pretrained_model'))
    monkeypatch.setattr(seg_utils.seg_env, 'TMP_HOME', str(tmp_path))
    # PaddleSeg's download step replaced by what it returns (extrapath/extraname), so nothing is fetched
    monkeypatch.setattr(seg_utils, 'download_file_and_uncompress',
                        lambda url, savepath, cover, extrapath, extraname, filename: os.path.join(extrapath, extraname))
    urls = {
        'https://bj.bcebos.com/paddleseg/dygraph/resnet50_vd_ssld_v2.tar.gz': 'resnet50_vd_ssld_v2/model.pdparams',
        'https://paddleseg.bj.bcebos.com/dygraph/backbone/mscan_t_imagenet_pretrained.zip':
            'mscan_t_imagenet_pretrained/model.pdparams',
        'https://bj.bcebos.com/paddleseg/dygraph/backbone/mix_vision_transformer_b0.tar.gz':
            'mix_vision_transformer_b0/model.pdparams',
        'https://paddleseg.bj.bcebos.com/dygraph/cityscapes/mscale_ocrnet_hrnetv2_psa_cityscapes_1024x2048_150k/'
        'mscale_ocrnet_pretrained_mappilary.zip': 'mscale_ocrnet_pretrained_mappilary/model.pdparams',
        'https://example.com/a/b/v1.2.tgz': 'v1/model.pdparams',
        'http://example.com/x/weights.tar': 'weights/model.pdparams',
        'https://example.com/models/foo/model.pdparams': 'foo/model.pdparams',
        'https://example.com/models/my%20net/best.pdparams': 'my net/best.pdparams',
        'http://example.com/model.pdparams': 'example.com/model.pdparams',
    }
    for url, relative in urls.items():
        expected = os.path.join(str(home), 'pretrained_model', *relative.split('/'))
        assert pretrained_cache_path(url) == expected, url
        assert seg_utils.download_pretrained_model(url) == expected, url


@pytest.mark.paddle26
def test_tar_gz_through_backbone_then_cache_without_network(site, mit_weights):
    www, home, server = site
    state, blob = mit_weights
    # the folder inside the archive need not match the archive's name (PaddleSeg renames it too)
    _tar_gz(www / 'mit_b0_imagenet.tar.gz', {'inner_folder/model.pdparams': blob, 'inner_folder/README': b'hi'})
    url = server.url('mit_b0_imagenet.tar.gz')

    paddle.seed(99)
    model = manager.BACKBONES['MixVisionTransformer_B0'](pretrained=url)
    _assert_same_state(model, state)
    assert _cache_listing(home) == ['mit_b0_imagenet', 'mit_b0_imagenet/model.pdparams']
    assert (home / 'pretrained_model' / 'mit_b0_imagenet' / 'model.pdparams').read_bytes() == blob
    assert server.requests == ['/mit_b0_imagenet.tar.gz']

    server.stop()  # second use: the cache, no network
    paddle.seed(98)
    again = manager.BACKBONES['MixVisionTransformer_B0'](pretrained=url)
    _assert_same_state(again, state)
    assert server.requests == ['/mit_b0_imagenet.tar.gz']


@pytest.mark.paddle26
def test_zip_with_weights_at_top_level(site, mit_weights):
    www, home, server = site
    _, blob = mit_weights
    with zipfile.ZipFile(www / 'ocr_pretrained.v2.zip', 'w', zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        zf.writestr('model.pdparams', blob)
        zf.writestr('notes/model.pdparams', b'deeper copies are not chosen')
    url = server.url('ocr_pretrained.v2.zip')
    path = resolve_pretrained(url)
    assert path == str(home / 'pretrained_model' / 'ocr_pretrained' / 'model.pdparams')
    assert open(path, 'rb').read() == blob
    assert _cache_listing(home) == ['ocr_pretrained', 'ocr_pretrained/model.pdparams']


def test_tar_whose_weights_are_a_symlink_inside_the_archive(site, mit_weights):
    www, home, server = site
    _, blob = mit_weights
    with tarfile.open(www / 'linked.tar', 'w') as tar:
        info = tarfile.TarInfo('linked/data/real.bin')
        info.size = len(blob)
        tar.addfile(info, io.BytesIO(blob))
        link = tarfile.TarInfo('linked/model.pdparams')
        link.type, link.linkname = tarfile.SYMTYPE, 'data/real.bin'
        tar.addfile(link)
    path = resolve_pretrained(server.url('linked.tar'))
    assert open(path, 'rb').read() == blob
    assert _cache_listing(home) == ['linked', 'linked/model.pdparams']


@pytest.mark.paddle26
def test_plain_pdparams_url_through_hardnet_loader(site):
    www, home, server = site
    paddle.seed(3)
    source = HarDNet(num_classes=3, **TINY_HARDNET)
    (www / 'hardnet_tiny').mkdir()
    paddle.save(source.state_dict(), str(www / 'hardnet_tiny' / 'best.pdparams'))
    url = server.url('hardnet_tiny/best.pdparams')

    paddle.seed(4)
    loaded = HarDNet(num_classes=3, pretrained=url, **TINY_HARDNET)
    _assert_same_state(loaded, {k: v.numpy() for k, v in source.state_dict().items()})
    assert _cache_listing(home) == ['hardnet_tiny', 'hardnet_tiny/best.pdparams']
    assert (home / 'pretrained_model' / 'hardnet_tiny' / 'best.pdparams').read_bytes() == \
        (www / 'hardnet_tiny' / 'best.pdparams').read_bytes()


def test_existing_paddleseg_cache_is_reused_without_network(site, mit_weights):
    _, home, server = site
    state, blob = mit_weights
    cached = home / 'pretrained_model' / 'mix_vision_transformer_b0' / 'model.pdparams'
    cached.parent.mkdir(parents=True)
    cached.write_bytes(blob)
    url = server.url('paddleseg/dygraph/backbone/mix_vision_transformer_b0.tar.gz')  # not served
    server.stop()
    paddle.seed(5)
    model = manager.BACKBONES['MixVisionTransformer_B0'](pretrained=url)
    _assert_same_state(model, state)
    assert server.requests == []


@pytest.mark.paddle26
def test_http_404_names_url_and_cache_path(site):
    _, home, server = site
    url = server.url('missing/resnet50_vd_ssld_v2.tar.gz')
    cache = home / 'pretrained_model' / 'resnet50_vd_ssld_v2' / 'model.pdparams'
    with pytest.raises(UserError) as err:
        manager.BACKBONES['ResNet18_vd'](pretrained=url)
    assert str(err.value) == (f"cannot download pretrained weights {url}: HTTP Error 404: File not found; "
                              f"put the file at {cache}")
    assert _cache_listing(home) == []


def test_unreachable_server_names_url_and_cache_path(site):
    _, home, server = site
    url = server.url('w/model.pdparams')
    server.stop()  # connection refused
    with pytest.raises(UserError) as err:
        resolve_pretrained(url)
    message = str(err.value)
    assert message.startswith(f"cannot download pretrained weights {url}: ")
    assert 'refused' in message.lower()
    assert message.endswith(f"; put the file at {home / 'pretrained_model' / 'w' / 'model.pdparams'}")
    assert '\n' not in message
    assert _cache_listing(home) == []


def test_body_shorter_than_content_length(site, mit_weights):
    www, home, server = site
    _, blob = mit_weights
    _tar_gz(www / 'short.tar.gz', {'short/model.pdparams': blob})
    size = (www / 'short.tar.gz').stat().st_size
    url = server.url('lying/short.tar.gz')
    with pytest.raises(UserError) as err:
        resolve_pretrained(url)
    cache = home / 'pretrained_model' / 'short' / 'model.pdparams'
    assert str(err.value) == (f"cannot download pretrained weights {url}: the transfer stopped after {size} of "
                              f"{size + 1000} bytes; put the file at {cache}")
    assert _cache_listing(home) == []


@pytest.mark.paddle26
def test_tar_gz_cut_in_half(site, mit_weights):
    www, home, server = site
    _, blob = mit_weights
    _tar_gz(www / 'whole.tar.gz', {'half/model.pdparams': blob})
    data = (www / 'whole.tar.gz').read_bytes()
    (www / 'half.tar.gz').write_bytes(data[:len(data) // 2])
    url = server.url('half.tar.gz')
    with pytest.raises(UserError) as err:
        resolve_pretrained(url)
    message = str(err.value)
    assert message.startswith(f"cannot unpack pretrained weights {url}: ")
    assert message.endswith(f"; put the file at {home / 'pretrained_model' / 'half' / 'model.pdparams'}")
    assert '\n' not in message
    assert _cache_listing(home) == []


def test_archive_without_weights(site):
    www, home, server = site
    _tar_gz(www / 'empty.tgz', {'empty/other.bin': b'x' * 10})
    url = server.url('empty.tgz')
    with pytest.raises(UserError) as err:
        resolve_pretrained(url)
    assert str(err.value) == (f"pretrained weights archive {url} holds no model.pdparams; put the file at "
                              f"{home / 'pretrained_model' / 'empty' / 'model.pdparams'}")
    assert _cache_listing(home) == []


def _files_under(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob('*') if p.is_file())


@pytest.mark.paddle26
def test_zip_member_escaping_with_dotdot_is_refused(site, tmp_path, mit_weights):
    www, home, server = site
    _, blob = mit_weights
    with zipfile.ZipFile(www / 'evil.zip', 'w') as zf:
        zf.writestr('evil/model.pdparams', blob)
        zf.writestr('../evil.txt', b'escaped')
    assert zipfile.ZipFile(www / 'evil.zip').namelist()[1] == '../evil.txt'
    before = _files_under(tmp_path)
    url = server.url('evil.zip')
    with pytest.raises(UserError) as err:
        resolve_pretrained(url)
    assert str(err.value) == (f"refusing pretrained weights archive {url}: member '../evil.txt' has an absolute "
                              f"path or '..'")
    assert _cache_listing(home) == []
    assert _files_under(tmp_path) == before
    assert not (home / 'evil.txt').exists() and not (home / 'pretrained_model' / 'evil.txt').exists()


def test_tar_member_with_absolute_path_is_refused(site, tmp_path, mit_weights):
    www, home, server = site
    _, blob = mit_weights
    target = tmp_path / 'outside' / 'abs_evil.txt'
    _tar_gz(www / 'abs.tar.gz', {'abs/model.pdparams': blob, str(target): b'escaped'})
    url = server.url('abs.tar.gz')
    with pytest.raises(UserError) as err:
        resolve_pretrained(url)
    assert str(err.value) == (f"refusing pretrained weights archive {url}: member {str(target)!r} has an absolute "
                              f"path or '..'")
    assert not target.exists() and not target.parent.exists()
    assert _cache_listing(home) == []


@pytest.mark.parametrize('kind, target, words', [
    (tarfile.SYMTYPE, '../../etc/passwd', 'a symlink'),  # relative to link/, so it climbs out
    (tarfile.SYMTYPE, '/etc/passwd', 'a symlink'),
    (tarfile.LNKTYPE, '../outside.bin', 'a hard link'),  # relative to the archive's top
])
def test_tar_link_pointing_outside_is_refused(site, mit_weights, kind, target, words):
    www, home, server = site
    _, blob = mit_weights
    with tarfile.open(www / 'link.tar', 'w') as tar:
        info = tarfile.TarInfo('link/model.pdparams')
        info.size = len(blob)
        tar.addfile(info, io.BytesIO(blob))
        link = tarfile.TarInfo('link/passwd')
        link.type, link.linkname = kind, target
        tar.addfile(link)
    url = server.url('link.tar')
    with pytest.raises(UserError) as err:
        resolve_pretrained(url)
    assert str(err.value) == (f"refusing pretrained weights archive {url}: member 'link/passwd' is {words} "
                              f"pointing outside the archive ({target})")
    assert _cache_listing(home) == []


def test_interrupted_download_leaves_nothing(site, mit_weights, monkeypatch):
    import paddle_models.weights as weights

    www, home, server = site
    _, blob = mit_weights
    (www / 'slow').mkdir()
    (www / 'slow' / 'model.pdparams').write_bytes(blob)
    cache = home / 'pretrained_model' / 'slow' / 'model.pdparams'
    seen = []

    class InterruptingBar(weights.tqdm):
        def update(self, n=1):
            # mid-download: the bytes go to a temporary folder beside the cache folders, the cache file is absent
            seen.append((cache.exists(), _cache_listing(home)))
            raise KeyboardInterrupt

    monkeypatch.setattr(weights, 'tqdm', InterruptingBar)
    with pytest.raises(KeyboardInterrupt):
        resolve_pretrained(server.url('slow/model.pdparams'))
    assert seen[0][0] is False
    assert len(seen[0][1]) == 2 and seen[0][1][0].startswith('.download-') and seen[0][1][1].endswith('/download')
    assert _cache_listing(home) == []


def test_bad_urls():
    with pytest.raises(UserError) as err:
        resolve_pretrained('ftp://example.com/w/model.pdparams')
    assert str(err.value) == ("pretrained must be a local .pdparams file or an http(s) URL: "
                              "ftp://example.com/w/model.pdparams")
    with pytest.raises(UserError) as err:
        resolve_pretrained('https://example.com/weights/')
    assert str(err.value) == ("pretrained URL https://example.com/weights/ does not name a weights file (PaddleSeg's "
                              "cache would use 'weights'/'')")
    with pytest.raises(UserError) as err:
        resolve_pretrained('https://example.com/a/%2E%2E/model.pdparams')
    assert str(err.value).startswith("pretrained URL https://example.com/a/%2E%2E/model.pdparams does not name")
    assert resolve_pretrained('local/dir/model.pdparams') == 'local/dir/model.pdparams'


def test_config_builder_downloads_backbone_weights(site, mit_weights, tmp_path):
    from paddle_models.core.config import Builder, load_config

    www, _, server = site
    state, blob = mit_weights
    _tar_gz(www / 'mix_vision_transformer_b0.tar.gz', {'mix_vision_transformer_b0/model.pdparams': blob})
    config = tmp_path / 'segformer.yml'
    config.write_text(f"model:\n  type: SegFormer\n  num_classes: 2\n  backbone:\n"
                      f"    type: MixVisionTransformer_B0\n"
                      f"    pretrained: {server.url('mix_vision_transformer_b0.tar.gz')}\n")
    paddle.seed(21)
    model = Builder(load_config(str(config))).model()
    _assert_same_state(model.backbone, state)


def test_train_py_downloads_a_paddleseg_configs_backbone_archive(site, mit_weights, tmp_path, camvid, capsys):
    """PaddleSeg's SegFormer-B0 Cityscapes config, its backbone URL pointed at the local server (the config is
    otherwise unchanged, through `_base_`): train.py downloads the archive into the empty cache, trains from those
    weights, and a second run uses the cache with the server stopped."""
    import train as train_tool
    from dataset_layouts import make_cityscapes

    shared = os.path.join(REPO, '..', 'shared', 'paddleseg-2.8.0-configs', 'configs', 'segformer',
                          'segformer_b0_cityscapes_1024x1024_160k.yml')
    if not os.path.isfile(shared):
        if os.environ.get('CI') == 'true':
            pytest.fail(f"PaddleSeg's configs not found: {shared}")
        pytest.skip(f"PaddleSeg's configs not found: {shared}")
    www, home, server = site
    state, blob = mit_weights
    _tar_gz(www / 'mix_vision_transformer_b0.tar.gz', {'mix_vision_transformer_b0/model.pdparams': blob})
    config = tmp_path / 'segformer_local_weights.yml'
    config.write_text(f"_base_: '{os.path.abspath(shared)}'\nmodel:\n  backbone:\n"
                      f"    pretrained: {server.url('mix_vision_transformer_b0.tar.gz')}\n")
    root = make_cityscapes(str(tmp_path / 'cityscapes'), camvid, counts=(2, 1))
    opts = [f'train_dataset.dataset_root={root}', f'val_dataset.dataset_root={root}',
            'train_dataset.transforms.1.crop_size=[64,64]']
    for run in ('download', 'cached'):
        train_tool.main(['--config', str(config), '--iters', '1', '--batch_size', '1', '--log_iters', '1',
                         '--save_dir', str(tmp_path / run), '--device', 'cpu', '--opts', *opts])
        if run == 'download':
            assert server.requests == ['/mix_vision_transformer_b0.tar.gz']
            server.stop()
    out = capsys.readouterr()
    assert out.err.count('downloading') == 1, out.err[-2000:]
    cached = home / 'pretrained_model' / 'mix_vision_transformer_b0' / 'model.pdparams'
    assert _cache_listing(home) == ['mix_vision_transformer_b0', 'mix_vision_transformer_b0/model.pdparams']
    assert cached.read_bytes() == blob
    assert '[TRAIN]' in out.out + out.err
