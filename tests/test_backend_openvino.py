"""The standalone OpenVINO runtime as a backend of ONNX exports, and ``--backend auto`` (issue 21, items 3 and 4b).

``export.py --format onnx --backend openvino`` checks the converted model in OpenVINO and writes ``backend:
openvino``; deploy/python/infer.py and ``InferenceModel`` run it (or the same files in ONNX Runtime, on request) with
the outputs of Paddle Inference and of the dynamic model; ``--backend auto`` measures the runtimes the files allow
once and caches the choice in ``backend_choice.json`` beside deploy.yaml. Needs the ``openvino`` package
(requirements-test.txt); tiny HarDNets, inputs of at most 96 pixels (the auto measurement's default 512 x 512 is
replaced by a fixed 64 x 64 input shape where a test measures). Not marked paddle26: ONNX exports need Paddle 3.x.
"""
import asyncio
import json
import logging
import os
import shutil
import subprocess
import sys

import numpy as np
import paddle
import pytest
import yaml
from PIL import Image

if paddle.__version__.split('.')[0] == '2':  # CI's Paddle 2.6.2 venv runs only the paddle26 subset, without openvino
    pytest.skip('the OpenVINO backend is tested with Paddle 3 (the main suite)', allow_module_level=True)
import openvino  # noqa: E402,F401  (a missing package fails here, not as a skip: CI installs it)
from conftest import REPO, run_export, write_tiny_hardnet  # noqa: E402
from helpers import TINY_TRANSFORMS, load_infer, load_script  # noqa: E402
from paddle_models.core import exported
from paddle_models.core.export import export_model
from paddle_models.core.exported import CHOICE_FILE, InferenceModel
from paddle_models.errors import UserError
from paddle_models.tools import export as export_tool

INFER = os.path.join(REPO, 'deploy', 'python', 'infer.py')


@pytest.fixture(scope='module')
def exports(tmp_path_factory):
    """A tiny HarDNet's weights exported three ways: ``export.py --format onnx --backend openvino`` (the command
    line, free input size, argmax), the same as logits (``export_model``, output_op none) and a Paddle program (the
    reference)."""
    root = tmp_path_factory.mktemp('ov_backend')
    model, weights, config = write_tiny_hardnet(root, seed=7)
    result = subprocess.run([sys.executable, 'export.py', '--config', str(config), '--model_path', str(weights),
                             '--save_dir', str(root / 'ov'), '--format', 'onnx', '--backend', 'openvino'],
                            capture_output=True, text=True, cwd=REPO, timeout=600)
    assert result.returncode == 0, result.stderr
    assert 'OpenVINO matches Paddle Inference' in result.stdout + result.stderr
    logits = export_model(model, str(root / 'ov_logits'), output_op='none', transforms=TINY_TRANSFORMS, fmt='onnx',
                          backend='openvino')
    program = export_model(model, str(root / 'paddle'), transforms=TINY_TRANSFORMS)
    images = root / 'images'
    images.mkdir()
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate(((48, 64), (40, 56))):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(images / f'im{i}.png')
    return {'model': model, 'root': root, 'ov': root / 'ov', 'logits': logits, 'program': program,
            'images': images, 'config': config, 'weights': weights}


def _dynamic(model, data):
    with paddle.no_grad():
        return model(paddle.to_tensor(data))[0].numpy()


class _Lines(logging.Handler):
    def __init__(self):
        super().__init__()
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


@pytest.fixture
def infer(capsys):
    """Run infer.py's ``main`` in this process: ``run(argv) -> (exit code, its log lines, its error lines)``."""
    module = load_infer()
    lines = _Lines()
    logger = logging.getLogger('infer')

    def run(argv):
        del lines.lines[:]
        level = logger.level
        logger.addHandler(lines)  # main() then adds no stderr handler of its own
        logger.setLevel(logging.INFO)
        try:
            code = module.main([str(a) for a in argv] + ['--device', 'cpu', '--cpu_threads', '1'])
        finally:
            logger.removeHandler(lines)
            logger.setLevel(level)
        errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith('error:')]
        return code, list(lines.lines), errors

    return run


def test_export_records_openvino_and_matches_paddle_and_the_dynamic_model(exports):
    ov = exports['ov']
    assert sorted(os.listdir(ov)) == ['deploy.yaml', 'model.onnx']
    with open(ov / 'deploy.yaml', encoding='utf-8') as f:
        deploy = yaml.safe_load(f)['Deploy']
    assert (deploy['model'], deploy['backend'], deploy['output_op']) == ('model.onnx', 'openvino', 'argmax')
    assert 'params' not in deploy and deploy['input_shape'] == [None, 3, None, None]
    runner = InferenceModel(ov, threads=1)
    assert runner.backend == 'openvino' and runner.backend_timings is None
    for shape in ([1, 3, 64, 64], [2, 3, 48, 80]):  # a free size: each shape gets its own compile
        data = np.random.default_rng(1).standard_normal(shape).astype('float32')
        got = runner(data)
        paddle_ids = run_export(exports['program'], data, onednn=True)
        assert got.dtype == np.int32 and got.shape == (shape[0],) + tuple(shape[2:])
        assert np.mean(got != paddle_ids) <= 1e-3
        assert np.mean(got != _dynamic(exports['model'], data).argmax(1)) <= 1e-3
        assert len(np.unique(got)) > 1


def test_openvino_and_onnxruntime_logits_match_the_dynamic_model(exports, monkeypatch):
    """Logits within 1e-4 (relative to the largest) in both ONNX runtimes; past MAX_SHAPES compiles the dynamic
    compile takes over and gives the same numbers."""
    monkeypatch.setattr(exported.OpenVinoSession, 'MAX_SHAPES', 1)
    folder = exports['logits']['save_dir']
    runners = {b: InferenceModel(folder, threads=1, backend=b) for b in ('openvino', 'onnxruntime')}
    assert InferenceModel(folder, threads=1).backend == 'openvino'
    shapes = ([1, 3, 64, 64], [1, 3, 56, 72], [1, 3, 64, 64])
    for shape in shapes:
        data = np.random.default_rng(2).standard_normal(shape).astype('float32')
        want = _dynamic(exports['model'], data)
        for backend, runner in runners.items():
            got = runner(data)
            assert got.shape == want.shape and got.dtype == np.float32
            relative = float(np.abs(got - want).max() / np.abs(want).max())
            assert relative <= 1e-4, f"{backend} {shape}: {relative:.3g}"
    assert sorted(runners['openvino']._run._requests, key=str) == [(1, 3, 64, 64), None]


def test_infer_runs_the_openvino_export_and_its_override_as_paddle_inference(exports, infer, tmp_path):
    outputs = {}
    for name, config, extra in (('openvino', exports['ov'] / 'deploy.yaml', []),
                                ('onnxruntime', exports['ov'] / 'deploy.yaml', ['--backend', 'onnxruntime']),
                                ('paddle', exports['program']['deploy_yaml'], [])):
        out = tmp_path / name
        code, lines, errors = infer(['--config', config, '--image_path', exports['images'], '--save_dir', out,
                                     '--benchmark', 'True', *extra])
        assert code == 0 and errors == []
        if name == 'openvino':
            assert any(line.startswith('OpenVINO 2026.4.1: CPU, 1 thread(s), FP32') for line in lines)
        if name == 'onnxruntime':
            assert 'ONNX Runtime: providers CPUExecutionProvider' in lines
        outputs[name] = {p: np.asarray(Image.open(out / p)) for p in sorted(os.listdir(out))}
    assert sorted(outputs['openvino']) == sorted(outputs['paddle']) == ['im0.png', 'im1.png']
    for png, want in outputs['paddle'].items():
        assert len(np.unique(want)) > 1
        for name in ('openvino', 'onnxruntime'):
            assert outputs[name][png].shape == want.shape and np.mean(outputs[name][png] != want) <= 1e-3


def test_backend_the_files_do_not_allow_is_one_line(exports, infer, tmp_path):
    program, onnx = exports['program'], exports['ov'] / 'model.onnx'
    image = exports['images'] / 'im0.png'
    code, _, errors = infer(['--config', program['deploy_yaml'], '--image_path', image, '--save_dir', tmp_path / 'a',
                             '--backend', 'openvino'])
    assert code == 2 and errors == [
        f"error: --backend openvino: {program['model']} is a Paddle program, which runs in paddle_inference only "
        f"(export.py --format onnx writes a model for onnxruntime and openvino)"]
    code, _, errors = infer(['--config', exports['ov'] / 'deploy.yaml', '--image_path', image, '--save_dir',
                             tmp_path / 'b', '--backend', 'paddle_inference'])
    assert code == 2 and errors == [
        f"error: --backend paddle_inference: {onnx} is an ONNX model, which runs in onnxruntime or openvino"]
    assert not (tmp_path / 'a').exists() and not (tmp_path / 'b').exists()

    with pytest.raises(UserError) as err:
        InferenceModel(program['save_dir'], backend='openvino')
    assert str(err.value) == (f"--inference_model: backend openvino cannot run {program['model']}: a Paddle program "
                              f"runs in paddle_inference only (export.py --format onnx writes a model for "
                              f"onnxruntime and openvino)")
    with pytest.raises(UserError) as err:
        InferenceModel(exports['ov'], backend='paddle_inference')
    assert str(err.value) == (f"--inference_model: backend paddle_inference cannot run {onnx}: an ONNX model runs "
                              f"in onnxruntime or openvino")
    with pytest.raises(UserError) as err:
        InferenceModel(exports['ov'], backend='tensorrt')
    assert str(err.value) == ("--inference_model: backend: unknown value 'tensorrt'; expected one of "
                              "paddle_inference, onnxruntime, openvino, auto")
    # auto on a Paddle program: the only runtime, nothing measured or written
    runner = InferenceModel(program['save_dir'], threads=1, backend='auto')
    assert runner.backend == 'paddle_inference' and not os.path.exists(os.path.join(program['save_dir'],
                                                                                     CHOICE_FILE))
    with pytest.raises(UserError) as err:
        export_tool.main(['--config', str(exports['config']), '--save_dir', str(tmp_path / 'c'), '--backend',
                          'openvino'])
    assert str(err.value) == ("--backend openvino applies to --format onnx (an ONNX model runs in onnxruntime or "
                              "openvino); --format paddle runs in Paddle Inference")
    with pytest.raises(UserError) as err:
        export_model(exports['model'], str(tmp_path / 'd'), fmt='paddle', backend='openvino')
    assert str(err.value) == ("backend: 'openvino' applies to ONNX exports (format onnx); format paddle runs in "
                              "Paddle Inference only")
    assert not (tmp_path / 'c').exists() and not (tmp_path / 'd').exists()


# run a tool with the openvino package made unimportable (as if it were not installed)
_NO_OPENVINO = "import runpy, sys; sys.modules['openvino'] = None; sys.argv = sys.argv[1:]; " \
               "runpy.run_path(sys.argv[0], run_name='__main__')"


def test_missing_openvino_is_one_line_naming_pip_install(exports, tmp_path, monkeypatch):
    result = subprocess.run([sys.executable, '-c', _NO_OPENVINO, 'export.py', '--config', str(exports['config']),
                             '--model_path', str(exports['weights']), '--save_dir', str(tmp_path / 'out'),
                             '--format', 'onnx', '--backend', 'openvino'],
                            capture_output=True, text=True, cwd=REPO, timeout=300)
    assert result.returncode == 2 and 'Traceback' not in result.stderr
    assert [line for line in result.stderr.splitlines() if line.startswith('error:')] == [
        "error: --format onnx --backend openvino needs openvino, which is not installed: pip install "
        "openvino==2026.4.1"]
    assert not (tmp_path / 'out').exists()

    deploy = exports['ov'] / 'deploy.yaml'
    result = subprocess.run([sys.executable, '-c', _NO_OPENVINO, INFER, '--config', str(deploy), '--image_path',
                             str(exports['images']), '--save_dir', str(tmp_path / 'res'), '--device', 'cpu'],
                            capture_output=True, text=True, cwd=REPO, timeout=300)
    assert result.returncode == 2 and 'Traceback' not in result.stderr
    assert [line for line in result.stderr.splitlines() if line.startswith('error:')] == [
        f"error: --config: {deploy}: backend openvino needs the openvino package, which is not installed: "
        f"pip install openvino"]

    monkeypatch.setitem(sys.modules, 'openvino', None)
    with pytest.raises(UserError) as err:
        InferenceModel(exports['ov'])
    assert str(err.value) == (f"--inference_model: {exports['ov'] / 'model.onnx'}: OpenVINO needs the openvino "
                              f"package, which is not installed: pip install openvino==2026.4.1")
    runner = InferenceModel(exports['ov'], threads=1, backend='auto')  # only ONNX Runtime left: nothing to measure
    assert runner.backend == 'onnxruntime' and not (exports['ov'] / CHOICE_FILE).exists()


def _fixed_copy(exports, tmp_path):
    """A copy of the OpenVINO export whose deploy.yaml fixes the input at 1x3x64x64 (so that auto measures on a
    small input)."""
    folder = tmp_path / 'export'
    shutil.copytree(exports['ov'], folder)
    deploy = folder / 'deploy.yaml'
    dic = yaml.safe_load(deploy.read_text())
    dic['Deploy']['input_shape'] = [1, 3, 64, 64]
    deploy.write_text(yaml.safe_dump(dic))
    return folder


def test_auto_measures_once_caches_and_is_overridden(exports, infer, tmp_path):
    folder = _fixed_copy(exports, tmp_path)
    cache = folder / CHOICE_FILE
    args = ['--config', folder / 'deploy.yaml', '--image_path', exports['images'], '--save_dir', tmp_path / 'out']

    code, lines, _ = infer(args + ['--backend', 'auto'])
    assert code == 0
    assert [line for line in lines if line.startswith('backend auto: measuring')] == [
        'backend auto: measuring onnxruntime, openvino on a 1x3x64x64 input (not measured yet)']
    record = json.loads(cache.read_text())
    assert sorted(record['timings_ms']) == ['onnxruntime', 'openvino']
    assert all(isinstance(t, float) and t > 0 for t in record['timings_ms'].values())
    assert record['choice'] == min(record['timings_ms'], key=record['timings_ms'].get)
    key = record['key']
    assert (key['threads'], key['device'], key['input_shape'], key['model']) == (1, 'cpu', [1, 3, 64, 64],
                                                                                 'model.onnx')
    assert key['cpu'] == exported.cpu_model() and key['cpu_count'] == os.cpu_count()
    assert key['versions'] == {'onnxruntime': exported.backend_version('onnxruntime'),
                               'openvino': exported.backend_version('openvino')}
    assert any(line.startswith(f"backend auto: {record['choice']} (") and line.endswith(f"cached in {cache}")
               for line in lines)

    # the second run reads the choice: no measurement, the file untouched
    stamp, text = cache.stat().st_mtime_ns, cache.read_text()
    code, lines, _ = infer(args + ['--backend', 'auto'])
    assert code == 0 and not any('measuring' in line for line in lines)
    assert any(line.startswith(f"backend auto: {record['choice']} (cached in {cache}: ") for line in lines)
    assert (cache.stat().st_mtime_ns, cache.read_text()) == (stamp, text)

    # the choice comes from the file: the other runtime written there is the one run
    other = 'onnxruntime' if record['choice'] == 'openvino' else 'openvino'
    cache.write_text(json.dumps(dict(record, choice=other)))
    code, lines, _ = infer(args + ['--backend', 'auto'])
    assert code == 0 and any(line.startswith(f"backend auto: {other} (cached in") for line in lines)
    used = 'ONNX Runtime: providers' if other == 'onnxruntime' else 'OpenVINO 2026.4.1: CPU'
    assert any(line.startswith(used) for line in lines)

    # an explicit --backend wins and leaves the cache alone; so does deploy.yaml's backend without --backend
    stamp = cache.stat().st_mtime_ns
    for extra, shown in ((['--backend', 'onnxruntime'], 'ONNX Runtime: providers'), ([], 'OpenVINO 2026.4.1: CPU')):
        code, lines, _ = infer(args + extra)
        assert code == 0 and not any(line.startswith('backend auto') for line in lines)
        assert any(line.startswith(shown) for line in lines)
    assert cache.stat().st_mtime_ns == stamp

    # another version or CPU measures again and rewrites the file
    for field, value, changed in (('versions', {'onnxruntime': '0.1', 'openvino': '0.1'}, 'versions'),
                                  ('cpu', 'Another CPU', 'cpu')):
        cache.write_text(json.dumps(dict(record, key=dict(record['key'], **{field: value}))))
        code, lines, _ = infer(args + ['--backend', 'auto'])
        assert code == 0
        assert f"backend auto: measuring onnxruntime, openvino on a 1x3x64x64 input (measured for another " \
               f"{changed})" in lines
        assert json.loads(cache.read_text())['key'] == key


def test_inference_model_auto_shares_infer_py_cache(exports, infer, tmp_path):
    """InferenceModel(backend='auto') measures and writes the same file infer.py reads, and reads what it wrote."""
    folder = _fixed_copy(exports, tmp_path)
    cache = folder / CHOICE_FILE
    first = InferenceModel(folder, threads=1, backend='auto')
    record = json.loads(cache.read_text())
    assert first.backend == record['choice'] and first.backend_timings == record['timings_ms']
    stamp = cache.stat().st_mtime_ns
    code, lines, _ = infer(['--config', folder / 'deploy.yaml', '--image_path', exports['images'], '--save_dir',
                            tmp_path / 'out', '--backend', 'auto'])
    assert code == 0 and not any('measuring' in line for line in lines)
    assert any(line.startswith(f"backend auto: {record['choice']} (cached in {cache}") for line in lines)
    second = InferenceModel(folder, threads=1, backend='auto')
    assert second.backend == record['choice'] and cache.stat().st_mtime_ns == stamp
    data = np.random.default_rng(3).standard_normal([1, 3, 64, 64]).astype('float32')
    assert np.mean(second(data) != run_export(exports['program'], data, onednn=True)) <= 1e-3


def test_auto_goes_on_where_the_cache_cannot_be_written(exports, infer, tmp_path):
    """A cache path that cannot be written (a folder stands there: the tests run as root, where a read-only mode
    would not stop the write): one warning line, the results written, a fresh measurement next time."""
    folder = _fixed_copy(exports, tmp_path)
    (folder / CHOICE_FILE).mkdir()
    args = ['--config', folder / 'deploy.yaml', '--image_path', exports['images'], '--save_dir', tmp_path / 'out',
            '--backend', 'auto']
    for _ in range(2):
        code, lines, errors = infer(args)
        assert code == 0 and errors == []
        assert any(line.startswith('backend auto: measuring onnxruntime, openvino') for line in lines)
        warnings = [line for line in lines if 'could not write the cache' in line]
        assert len(warnings) == 1 and str(folder / CHOICE_FILE) in warnings[0]
        assert warnings[0].endswith('the next run measures again')
        assert sorted(os.listdir(tmp_path / 'out')) == ['im0.png', 'im1.png']
    assert sorted(os.listdir(folder)) == [CHOICE_FILE, 'deploy.yaml', 'model.onnx']  # no temporary file left
    runner = InferenceModel(folder, threads=1, backend='auto')  # InferenceModel: the same
    assert runner.backend in ('onnxruntime', 'openvino') and (folder / CHOICE_FILE).is_dir()


def test_infer_prints_a_few_lines_unless_print_detail(exports, tmp_path):
    """A newcomer's run prints our own few lines; ONNX Runtime's info log (hundreds of lines per model) and Paddle's
    GLOG output come with ``--print_detail True``."""
    def run(*extra):
        result = subprocess.run([sys.executable, os.path.join('deploy', 'python', 'infer.py'), '--config',
                                 str(exports['ov'] / 'deploy.yaml'), '--image_path', str(exports['images'] / 'im0.png'),
                                 '--save_dir', str(tmp_path / 'out'), '--backend', 'onnxruntime', '--device', 'cpu',
                                 *extra], capture_output=True, text=True, cwd=REPO, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
        return (result.stdout + result.stderr).splitlines()

    quiet = run()
    assert len(quiet) <= 6 and all(' INFO infer: ' in line for line in quiet), quiet
    assert quiet[-1].endswith(f"saved 1 result(s) in {tmp_path / 'out'}")
    detailed = run('--print_detail', 'True')
    assert len(detailed) > 50 and sum('onnxruntime' in line for line in detailed) > 40


@pytest.mark.parametrize('backend', ['onnxruntime', 'openvino'])
def test_the_server_runs_the_onnx_export_in_both_runtimes(exports, backend, infer, tmp_path):
    """deploy/python/serve.py on an ``export.py --format onnx`` export, in ONNX Runtime and in the standalone
    OpenVINO runtime: a PaddleX-style request gets infer.py's label map for the same image (the Paddle Inference
    exports are served in tests/test_serve.py)."""
    import base64

    import httpx

    serve = load_script(os.path.join('deploy', 'python', 'serve.py'), 'serve_' + backend)
    image = exports['images'] / 'im1.png'
    code, _, errors = infer(['--config', exports['ov'] / 'deploy.yaml', '--image_path', image, '--save_dir',
                             tmp_path / 'ref', '--backend', backend])
    assert code == 0, errors
    expected = np.asarray(Image.open(tmp_path / 'ref' / 'im1.png'))
    app = serve.create_app(str(exports['ov'] / 'deploy.yaml'), backend=backend, cpu_threads=1)
    service = app.state.service
    service.batcher.start()
    try:
        async def request():
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url='http://serve',
                                         timeout=120) as client:
                for _ in range(600):
                    if service.batcher.ready:
                        break
                    await asyncio.sleep(0.1)
                metadata = (await client.get('/metadata')).json()
                answer = await client.post('/semantic-segmentation', json={
                    'image': base64.b64encode(image.read_bytes()).decode(), 'visualize': False})
                return metadata, answer

        metadata, answer = asyncio.run(request())
    finally:
        service.batcher.stop(30)
    assert metadata['backend'] == backend
    assert answer.status_code == 200, answer.text
    result = answer.json()['result']
    assert result['size'] == list(expected.shape)
    np.testing.assert_array_equal(np.array(result['labelMap']).reshape(expected.shape), expected)
