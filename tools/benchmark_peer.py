"""The PyTorch reference ("peer") of a benchmarked model, timed in eager mode and in ONNX Runtime, for
``tools/benchmark.py --peer``.

It runs in its own interpreter (``--peer-python``: torchvision and Paddle's test environment do not always install
side by side), so it imports neither Paddle nor ``paddle_models``: only torch, the peer's library and onnxruntime.

    python tools/benchmark_peer.py '<JSON spec>'       # one measurement; prints "BENCHMARK {json}"
    python tools/benchmark_peer.py --versions          # torch / onnxruntime versions, as JSON

Spec keys: ``peer`` (``{'kind': 'segformer' | 'linknet' | 'deeplabv3_resnet50', ...}``, see :func:`build_peer`),
``what`` (``torch_eager``: time the module under ``torch.no_grad`` and, given ``onnx``, export it there with
``torch.onnx.export(opset_version=17, dynamo=False)`` after the timing; ``ort``: time that file in an
``onnxruntime.InferenceSession`` on the CPU provider, a process that only loads it), ``size`` [H, W],
``repeats``, ``threads``, ``onnx`` (a file path). Batch 1, random weights, random input. A missing library or a
failing step prints ``{"ms": "n/a (<one line>)"}``, never a traceback.

``what: train_step`` (``tools/benchmark.py --measure train_step``) times a training step instead: ``batch``,
``size``, ``steps``, ``threads``, ``classes``; prints ``{"s": seconds per step}`` (see :func:`train_step`).
"""
import json
import resource
import statistics
import sys
import time


def _median_ms(fn, repeats):
    """Median milliseconds of ``repeats`` calls of ``fn`` after one warm-up call, and the warm-up's seconds."""
    start = time.perf_counter()
    fn()
    first_s = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times), first_s


def build_peer(peer):
    """The peer as an eval-mode ``torch.nn.Module`` mapping a [1, 3, H, W] image to [1, classes, H, W] logits.

    * ``segformer``: transformers' ``SegformerForSemanticSegmentation`` from ``peer['config']`` (SegformerConfig
      keyword arguments); its 1/4-resolution logits are upsampled to the input size (bilinear, align_corners
      False), the work our SegFormer's forward does too.
    * ``linknet``: ``segmentation_models_pytorch.Linknet(peer['encoder'], encoder_weights=None,
      classes=peer['classes'])``.
    * ``deeplabv3_resnet50``: torchvision's ``deeplabv3_resnet50(weights=None, weights_backbone=None,
      num_classes=peer['classes'], aux_loss=False)`` (output stride 8; its ``'out'``).
    """
    import torch
    import torch.nn.functional as F

    kind = peer['kind']
    if kind == 'segformer':
        from transformers import SegformerConfig, SegformerForSemanticSegmentation

        inner = SegformerForSemanticSegmentation(SegformerConfig(**peer['config']))

        class Peer(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.inner = inner

            def forward(self, x):
                logits = self.inner(pixel_values=x).logits
                return F.interpolate(logits, size=x.shape[2:], mode='bilinear', align_corners=False)
    elif kind == 'linknet':
        import segmentation_models_pytorch as smp

        inner = smp.Linknet(peer['encoder'], encoder_weights=None, classes=peer['classes'])

        class Peer(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.inner = inner

            def forward(self, x):
                return self.inner(x)
    elif kind == 'deeplabv3_resnet50':
        from torchvision.models.segmentation import deeplabv3_resnet50

        inner = deeplabv3_resnet50(weights=None, weights_backbone=None, num_classes=peer['classes'], aux_loss=False)

        class Peer(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.inner = inner

            def forward(self, x):
                return self.inner(x)['out']
    else:
        raise ValueError(f"unknown peer kind {kind!r}")
    return Peer().eval()


def _one_line(err):
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return f"{type(err).__name__}: {lines[-1] if lines else ''}".rstrip(': ')[:120]


def worker(spec):
    """One measurement (see the module docstring); returns the result dict."""
    import numpy as np

    h, w = spec['size']
    x = np.random.RandomState(0).randn(1, 3, h, w).astype('float32')
    threads = spec['threads']
    out = {}
    if spec['what'] == 'torch_eager':
        try:
            import torch
        except ImportError as err:
            return {'ms': f"n/a ({_one_line(err)})"}
        torch.manual_seed(0)
        torch.set_num_threads(threads)
        try:
            torch.set_num_interop_threads(1)
        except RuntimeError:  # already set in this process
            pass
        try:
            model = build_peer(spec['peer'])
        except ImportError as err:
            return {'ms': f"n/a ({_one_line(err)})"}
        tensor = torch.from_numpy(x)

        def run():
            with torch.no_grad():
                model(tensor).numpy()
        out['ms'], _ = _median_ms(run, spec['repeats'])
        out['params'] = sum(p.numel() for p in model.parameters())
        out['peak_mib'] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        if spec.get('onnx'):  # after the timing: the export is not part of the eager measurement
            try:
                with torch.no_grad():
                    torch.onnx.export(model, (tensor,), spec['onnx'], opset_version=17, dynamo=False,
                                      input_names=['x'], output_names=['logits'])
            except Exception as err:  # noqa: BLE001  (torch.onnx's many error types; named in the cell)
                out['onnx_error'] = _one_line(err)
    elif spec['what'] == 'ort':
        try:
            import onnxruntime as ort
        except ImportError as err:
            return {'ms': f"n/a ({_one_line(err)})"}
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        start = time.perf_counter()
        try:
            session = ort.InferenceSession(spec['onnx'], sess_options=options, providers=['CPUExecutionProvider'])
        except Exception as err:  # noqa: BLE001  (onnxruntime's own exception types)
            return {'ms': f"n/a ({_one_line(err)})"}
        name = session.get_inputs()[0].name
        setup_s = time.perf_counter() - start

        def run():
            session.run(None, {name: x})
        out['ms'], first_s = _median_ms(run, spec['repeats'])
        out['setup_s'] = setup_s + first_s
        out['peak_mib'] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    elif spec['what'] == 'train_step':
        return train_step(spec)
    else:
        raise ValueError(f"unknown peer measurement {spec['what']!r}")
    return out


def train_step(spec):
    """Seconds per training step of the peer in eager mode: forward, cross-entropy (ignore index 255) on random
    labels, backward, SGD with momentum 0.9; batch ``spec['batch']`` of ``spec['size']`` random images; the median
    of ``spec['steps']`` steps after two warm-up steps, with ``spec['threads']`` intra-op threads."""
    try:
        import torch
        import torch.nn.functional as F
        model = build_peer(spec['peer'])
    except ImportError as err:
        return {'s': f"n/a ({_one_line(err)})"}
    torch.manual_seed(0)
    torch.set_num_threads(spec['threads'])
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set in this process
        pass
    model.train()
    h, w = spec['size']
    images = torch.randn(spec['batch'], 3, h, w)
    labels = torch.randint(0, spec['classes'], (spec['batch'], h, w))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def step():
        loss = F.cross_entropy(model(images), labels, ignore_index=255)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    step()
    seconds, _ = _median_ms(step, spec['steps'])
    return {'s': seconds / 1000, 'params': sum(p.numel() for p in model.parameters()),
            'torch_threads': torch.get_num_threads()}


def versions():
    out = {}
    for name in ('torch', 'onnxruntime', 'transformers', 'torchvision', 'segmentation_models_pytorch'):
        try:
            out[name] = __import__(name).__version__
        except Exception:  # noqa: BLE001  (not installed, or fails to import beside the others)
            out[name] = None
    return out


def main(argv):
    if argv == ['--versions']:
        print('BENCHMARK ' + json.dumps(versions()))
        return
    try:
        out = worker(json.loads(argv[0]))
    except Exception as err:  # noqa: BLE001  (a failing peer is a table cell, not a traceback)
        out = {'ms': f"n/a ({_one_line(err)})"}
    print('BENCHMARK ' + json.dumps(out))


if __name__ == '__main__':
    main(sys.argv[1:])
