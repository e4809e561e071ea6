"""Shared test fixtures."""
import functools
import http.server
import os
import sys
import threading

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)  # the top-level tools (train.py, val.py, ...) are imported by tests

from paddle_models.utils.compat import preload_zlib  # noqa: E402  (imports the package, which does it too)

preload_zlib()  # before any test module imports paddle: Paddle 2.6.2 bundles a zlib that breaks the system one's users

import pytest  # noqa: E402

from helpers import TINY_HARDNET, TINY_TRANSFORMS, hardnet_section  # noqa: E402,F401  (re-exported for fixtures)

CAMVID_MINI = os.path.normpath(os.path.join(REPO, '..', 'shared', 'data', 'camvid_mini'))


def camvid_root():
    """Path of ../shared/data/camvid_mini. Skips the test where it is absent, fails under CI=true."""
    if os.path.isfile(os.path.join(CAMVID_MINI, 'train.txt')):
        return CAMVID_MINI
    message = f"camvid_mini not found at {CAMVID_MINI} (it lives beside the repo in ../shared/data)"
    if os.environ.get('CI') == 'true':
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture
def camvid():
    return camvid_root()


def write_tiny_hardnet(folder, seed, num_classes=5):
    """Save a tiny HarDNet's random weights (``paddle.seed(seed)``) and a config building it into ``folder``, for
    export.py's command line; returns (model, weights path, config path)."""
    import paddle
    import yaml

    from paddle_models.models.hardnet import HarDNet

    paddle.seed(seed)
    model = HarDNet(num_classes=num_classes, **TINY_HARDNET)
    model.eval()
    weights, config = folder / 'model.pdparams', folder / 'tiny.yml'
    paddle.save(model.state_dict(), str(weights))
    config.write_text(yaml.safe_dump({
        'model': hardnet_section(num_classes),
        'val_dataset': {'type': 'SyntheticShapes', 'image_size': 64, 'mode': 'val', 'transforms': TINY_TRANSFORMS}}))
    return model, weights, config


# Model sections of the smallest configs of the models that legacy-program tests (the OpenVINO engine, INT8) export:
# SegFormer at MiT-B0 widths (the smallest variant: MixVisionTransformer itself is not a registered backbone) with a
# narrow decoder, a narrow SegNeXt (MSCAN widths 16..32, one block per stage), LinkNet on ResNet-18
TINY_MODELS = {
    'SegFormer': {'type': 'SegFormer', 'embedding_dim': 16,
                  'backbone': {'type': 'MixVisionTransformer_B0', 'drop_path_rate': 0.0}},
    'SegNeXt': {'type': 'SegNeXt', 'backbone': {'type': 'MSCAN', 'embed_dims': [16, 16, 24, 32],
                                                'depths': [1, 1, 1, 1], 'drop_path_rate': 0.0},
                'decoder_cfg': {'channels': 16, 'ham_channels': 16, 'num_groups': 4, 'ham_kwargs': {'MD_R': 4}}},
    'LinkNet': {'type': 'LinkNet', 'backbone': {'type': 'ResNet18'}},
}


def write_tiny_config(folder, name, seed, num_classes=5):
    """Write ``folder/<name>.yml`` (``TINY_MODELS[name]``, SyntheticShapes train and val sets of 64x64 images, the
    tiny transforms) and ``folder/<name>.pdparams`` (its random weights after ``paddle.seed(seed)``), for the
    command-line tools; returns (weights path, config path)."""
    import paddle
    import yaml

    import paddle_models as pm

    config, weights = folder / f'{name}.yml', folder / f'{name}.pdparams'
    dataset = {'type': 'SyntheticShapes', 'image_size': 64, 'transforms': TINY_TRANSFORMS}
    config.write_text(yaml.safe_dump({'model': dict(TINY_MODELS[name], num_classes=num_classes),
                                      'train_dataset': dict(dataset, mode='train', num_samples=4),
                                      'val_dataset': dict(dataset, mode='val')}))
    paddle.seed(seed)
    paddle.save(pm.build_model(str(config)).state_dict(), str(weights))
    return weights, config


class _FileHandler(http.server.SimpleHTTPRequestHandler):
    """Serves the folder; under ``/lying/<file>`` it announces 1000 bytes more than it sends. Records every path."""

    def __init__(self, *args, requests, **kwargs):
        self.requests = requests
        super().__init__(*args, **kwargs)

    def log_message(self, *args):
        pass

    def do_GET(self):
        self.requests.append(self.path)
        if self.path.startswith('/lying/'):
            with open(os.path.join(self.directory, self.path[len('/lying/'):]), 'rb') as f:
                body = f.read()
            self.send_response(200)
            self.send_header('Content-Length', str(len(body) + 1000))
            self.end_headers()
            self.wfile.write(body)
            return
        super().do_GET()


class LocalFileServer:
    """An ``http.server`` on 127.0.0.1 (a free port) serving ``root`` in a thread, for download tests (no test may
    reach the internet). ``url(name)`` is a file's address; ``requests`` records every path asked for."""

    def __init__(self, root):
        self.requests = []
        handler = functools.partial(_FileHandler, directory=str(root), requests=self.requests)
        self.httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={'poll_interval': 0.05},
                                       daemon=True)
        self.thread.start()
        self.running = True

    def url(self, name):
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{name}"

    def stop(self):
        if self.running:
            self.httpd.shutdown()
            self.httpd.server_close()
            self.thread.join()
            self.running = False


def run_export(info, batch, onednn):
    """The first output of the program that ``export_model`` wrote (``info``: its result) for ``batch``, run in Paddle
    Inference on the CPU with oneDNN on or off."""
    from paddle.inference import Config, create_predictor

    config = Config(info['model'], info['params'])
    config.disable_gpu()
    config.disable_glog_info()
    if onednn:
        config.enable_mkldnn()
    else:
        config.disable_mkldnn()
    predictor = create_predictor(config)
    handle = predictor.get_input_handle(predictor.get_input_names()[0])
    handle.reshape(list(batch.shape))
    handle.copy_from_cpu(batch)
    predictor.run()
    return predictor.get_output_handle(predictor.get_output_names()[0]).copy_to_cpu()


# Disk: a full run writes well over 10 GB of checkpoints and exports (2-iteration checkpoints of HRNet-W48 and MaxViT
# are ~1 GB each). pytest.ini's `tmp_path_retention_policy = failed` deletes a passing test's tmp_path as it ends;
# the hooks below do the same for the folders that module-scoped fixtures make with tmp_path_factory.mktemp, when
# their module ends, so that the run's peak stays at a few GB. A failing test's tmp_path is kept for inspection.
_KEEP = set()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    path = getattr(item, 'funcargs', {}).get('tmp_path')
    if report.failed and path is not None:
        _KEEP.add(os.path.realpath(str(path)))


@pytest.fixture(scope='module', autouse=True)
def _remove_module_scratch(tmp_path_factory):
    import shutil
    base = tmp_path_factory.getbasetemp()
    before = set(os.listdir(base))
    yield
    for name in sorted(set(os.listdir(base)) - before):
        path = os.path.realpath(os.path.join(base, name))
        if path not in _KEEP and not name.startswith('pytest-'):
            shutil.rmtree(path, ignore_errors=True)
