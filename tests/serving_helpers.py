"""Helpers for the tests of deploy/python/serve.py (tests/test_serve.py and the load and web-page tests).

``make_tiny_export(folder)`` exports a tiny HarDNet (random weights, class names and palette in deploy.yaml);
``Server(deploy_yaml, *flags)`` runs serve.py as a subprocess on a free port of 127.0.0.1 until the block ends.
"""
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SERVE = os.path.join(REPO, 'deploy', 'python', 'serve.py')
INFER = os.path.join(REPO, 'deploy', 'python', 'infer.py')
TINY_HARDNET = dict(stem_channels=(8, 8, 8, 8), ch_list=(8, 12, 16), gr=(4, 4, 6), n_layers=(2, 2, 4))
TINY_TRANSFORMS = [{'type': 'Normalize', 'mean': [0.5, 0.5, 0.5], 'std': [0.5, 0.5, 0.5]}]
CLASS_NAMES = ['background', 'road', 'tree', 'sky', 'car', 'person', 'sign', 'pole']
PALETTE = [[0, 0, 0], [128, 64, 128], [0, 128, 0], [70, 130, 180], [0, 0, 142], [220, 20, 60], [220, 220, 0],
           [153, 153, 153]]


def make_tiny_export(folder, num_classes=5, seed=0, input_shape=None):
    """Export a tiny HarDNet (``paddle.seed(seed)`` weights) with ``Deploy.class_names`` and ``Deploy.palette``
    (the first ``num_classes`` of ``CLASS_NAMES``/``PALETTE``) into ``folder/inference_model``; returns the path of
    its deploy.yaml. ``input_shape`` as ``export_model``'s (default: free batch and size)."""
    import paddle

    from paddle_models.core.export import export_model
    from paddle_models.models.hardnet import HarDNet

    if num_classes > len(CLASS_NAMES):
        raise ValueError(f"num_classes at most {len(CLASS_NAMES)}")
    paddle.seed(seed)
    model = HarDNet(num_classes=num_classes, **TINY_HARDNET)
    model.eval()
    save_dir = os.path.join(str(folder), 'inference_model')
    export_model(model, save_dir, input_shape=input_shape, transforms=TINY_TRANSFORMS,
                 class_names=CLASS_NAMES[:num_classes], palette=PALETTE[:num_classes])
    return os.path.join(save_dir, 'deploy.yaml')


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


class Server:
    """``with Server(deploy_yaml, *extra_flags) as srv:`` runs ``python deploy/python/serve.py --config ...
    --host 127.0.0.1 --port <free port> --cpu_threads 1 *extra_flags`` (a later ``--cpu_threads`` in the flags
    wins) and waits (at most ``timeout`` s) until ``GET /health`` answers 200. ``srv.url`` is its base URL,
    ``srv.proc`` the process, ``srv.log()`` its stderr so far, ``srv.stop(sig)`` sends ``sig`` and returns the
    exit code. ``cwd``: the server's working directory (default: a fresh temporary folder, removed afterwards
    where it is empty)."""

    def __init__(self, deploy_yaml, *extra_flags, timeout=120, cwd=None, env=None):
        self.deploy_yaml, self.flags, self.timeout = str(deploy_yaml), [str(f) for f in extra_flags], timeout
        self.cwd, self.env = cwd, env
        self.port = free_port()
        self.url = f'http://127.0.0.1:{self.port}'
        self.proc = None
        self._stderr = []
        self._reader = None
        self._own_cwd = None

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        if self.proc is not None and self.proc.poll() is None:
            self.stop(signal.SIGTERM, timeout=30)
        if self._own_cwd is not None:
            try:
                os.rmdir(self._own_cwd)
            except OSError:
                pass
        return False

    def start(self):
        cwd = self.cwd
        if cwd is None:
            cwd = self._own_cwd = tempfile.mkdtemp(prefix='serve-cwd-')
        cmd = [sys.executable, SERVE, '--config', os.path.abspath(self.deploy_yaml), '--host', '127.0.0.1',
               '--port', str(self.port), '--cpu_threads', '1'] + self.flags
        env = dict(os.environ, **(self.env or {}))
        self.proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self._reader.join(5)
                raise RuntimeError(f"serve.py exited with {self.proc.returncode} before it was ready:\n{self.log()}")
            try:
                with urllib.request.urlopen(self.url + '/health', timeout=5) as response:
                    if response.status == 200:
                        return self
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            time.sleep(0.2)
        self.stop(signal.SIGKILL)
        raise RuntimeError(f"serve.py was not ready within {self.timeout} s:\n{self.log()}")

    def _read(self):
        for line in iter(self.proc.stderr.readline, b''):
            self._stderr.append(line.decode('utf-8', 'replace'))

    def log(self):
        """The server's stderr so far."""
        return ''.join(self._stderr)

    def stop(self, sig=signal.SIGTERM, timeout=60):
        """Send ``sig`` and wait for the exit; returns the exit code (negative: killed by a signal)."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._reader is not None:
            self._reader.join(5)
        return self.proc.returncode
