"""Post-training INT8 quantization of a trained model, for Paddle Inference with oneDNN on the CPU.

    python tools/quantize.py --config configs/hardnet.yml --model_path output/best_model/model.pdparams \
        --save_dir output/int8 [--calib_images 32]
    python deploy/python/infer.py --config output/int8/deploy.yaml --image_path img.jpg

What it does:

1. Exports the model as a *legacy* static program (``model.pdmodel``): Paddle 3.x's PIR programs have no oneDNN
   INT8 passes (only the legacy IR has ``quant_dequant_onednn_pass`` / ``cpu_quantize_pass``), so this tool runs
   with ``FLAGS_enable_pir_api=0``, which must be set before Paddle is imported (the command line does it; a caller
   that has imported Paddle with PIR on gets the work done in a subprocess). Under that flag Paddle 3.3.1's APIs
   that became C functions (``paddle.matmul``, ``F.gelu``, ``paddle.argmax``, ...) take no legacy variables; the
   export traces them through ``paddle_models.utils.compat.legacy_program_apis``. The model is traced with
   ``output_op`` 'none' (logits) and with Paddle's own ``bilinear_interp`` / ``nearest_interp`` instead of the
   portable resize (oneDNN runs those ops in legacy programs); the argmax is appended to the quantized program
   afterwards as the legacy ``arg_max`` op, so the output is int32 class ids as with ``export.py``. Its
   convolution biases are then rewritten into the form oneDNN's conv + bias fusion matches
   (``paddle_models.core.legacy.fuse_ready_conv_bias``).
2. Calibrates on ``--calib_images`` images of the config's ``train_dataset`` (evenly spread over it), read through
   the validation transforms (no random augmentation), batch 1, with ``PostTrainingQuantization`` (``--algo``,
   default hist: of KL, avg, mse and hist it kept the INT8 class maps of a trained HarDNet closest to the FP32
   ones; weights per output channel). Quantized ops: ``conv2d`` and ``depthwise_conv2d`` (the layers oneDNN
   runs in INT8); the program is saved in the ONNX-style quantize/dequantize format that Paddle Inference turns
   into oneDNN INT8 kernels with ``Config.enable_mkldnn_int8()``.
3. Checks the result: the FP32 program (oneDNN) and the INT8 program (oneDNN INT8) run on the first calibration
   image; the share of pixels with the same class is logged and recorded in deploy.yaml.
4. Writes ``model.pdmodel``, ``model.pdiparams`` and ``deploy.yaml`` (as ``export.py`` writes it, plus
   ``precision: int8`` and a ``quantization`` record) into a temporary folder beside ``--save_dir`` that replaces
   ``--save_dir`` only at the end: a failure leaves nothing half-written, and a previous export there intact.

What runs in INT8: the op types of ``paddle_models.core.exported.ONEDNN_INT8_OPS``, recorded in deploy.yaml as
``quantization.int8_ops`` and passed to ``Config.enable_mkldnn_int8`` by every runner: convolutions (with their
fused batch norm and activation: the program is traced with its batch norms unfolded, see
``core/export/program.py``'s ``_legacy_bias_is_reshaped``; with their bias, which
``paddle_models.core.legacy.fuse_ready_conv_bias`` puts in the form the fusion matches), concatenations,
additions, matmuls and reshapes between them. Transformer parts (LayerNorm, softmax, GELU, the attention's
transposes) stay FP32, so SegFormer gains little or nothing over the FP32 program (see docs/deployment.md, INT8 on CPU).
``pool2d`` stays FP32 (in INT8 it cost a trained HarDNet 1.7 mIoU points at the same speed, and PSPNet's program
failed in it); ``bilinear_interp`` and ``conv2d_transpose`` (LinkNet's decoder) have no oneDNN INT8 kernel and run
in FP32 behind dequantize/quantize reorders, so models with many of them gain less.

``deploy/python/infer.py`` reads ``precision: int8`` and turns oneDNN INT8 on. Without oneDNN (``--enable_mkldnn
False``, GPU) the same program still runs, in FP32 with simulated quantization.
"""
import os
import sys

if __name__ == '__main__':  # before anything imports Paddle: legacy programs, see the module docstring
    os.environ['FLAGS_enable_pir_api'] = '0'

import logging  # noqa: E402
import shutil  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

import paddle_models  # noqa: E402,F401  (first: preloads zlib before paddle, registers every component)

import numpy as np  # noqa: E402
import yaml  # noqa: E402

from paddle_models.core import cli  # noqa: E402
from paddle_models.core.legacy import TRACE_ERRORS, legacy_mode, run_in_legacy_mode  # noqa: E402
from paddle_models.errors import UserError, error_line  # noqa: E402

logger = logging.getLogger('quantize')

ALGOS = ('KL', 'hist', 'avg', 'mse', 'abs_max', 'emd')
QUANTIZED_OPS = ('conv2d', 'depthwise_conv2d')
DEPLOY_FILE = 'deploy.yaml'
PROGRAM_FILE, PARAMS_FILE = 'model.pdmodel', 'model.pdiparams'
# agreement of the FP32 and INT8 class maps on the check image below which a warning is logged
WARN_AGREEMENT = 0.9
# ... and below which nothing is written unless --min_agreement is lowered (a quantized model that far from its
# FP32 program is broken, not approximate: a trained HarDNet agrees on 97-99%, random tiny models on 85-99%)
MIN_AGREEMENT = 0.8


def parse_args(argv=None):
    parser = cli.parser('Post-training INT8 quantization for Paddle Inference with oneDNN (CPU).')
    parser.add_argument('--config', required=True, help='The PaddleSeg-format YAML config of the model.')
    parser.add_argument('--model_path', required=True, help='Trained weights (.pdparams or a checkpoint folder).')
    parser.add_argument('--save_dir', default='./output/inference_model_int8',
                        help='Folder for the quantized program and deploy.yaml. Default: ./output/inference_model_int8')
    parser.add_argument('--calib_images', type=cli.positive_int, default=32,
                        help='Training images used for calibration (batch 1). Default: 32')
    parser.add_argument('--algo', default='hist', choices=ALGOS,
                        help='How activation ranges are chosen from the calibration data (hist: the 99.999%% '
                             'quantile of each activation\'s absolute values; emd: the scale that keeps each activation\'s mean '
                             'and spread closest). Default: hist')
    parser.add_argument('--min_agreement', type=cli.fraction, default=MIN_AGREEMENT,
                        help='The share of a calibration image\'s pixels on which the INT8 and FP32 class maps must '
                             'agree for the INT8 model to be written; below it the run fails and writes nothing '
                             f'(0 writes it whatever the agreement). Default: {MIN_AGREEMENT}')
    parser.add_argument('--opts', nargs='+', default=None, metavar='KEY=VALUE',
                        help='Override config keys, e.g. --opts train_dataset.dataset_root=data/camvid')
    return parser.parse_args(argv)


def check_args(args):
    """The flags' own problems as one-line UserErrors, before anything heavy is loaded."""
    if not os.path.isfile(args.config):
        raise UserError(f"--config: {args.config} does not exist")
    if not os.path.exists(args.model_path):
        raise UserError(f"--model_path: {args.model_path} does not exist")
    check_save_dir(args.save_dir)


def check_save_dir(save_dir):
    """``save_dir`` must be new, empty or hold a previous export (a deploy.yaml), and its nearest existing folder
    writable."""
    save_dir = os.path.abspath(save_dir)
    if os.path.exists(save_dir) and not os.path.isdir(save_dir):
        raise UserError(f"--save_dir: {save_dir} exists and is not a folder")
    if os.path.isdir(save_dir) and os.listdir(save_dir) and not os.path.isfile(os.path.join(save_dir, DEPLOY_FILE)):
        raise UserError(f"--save_dir: {save_dir} is not empty and holds no previous export ({DEPLOY_FILE}); "
                        f"choose a new folder")
    parent = os.path.dirname(save_dir)
    existing = parent
    while existing and not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise UserError(f"--save_dir: {existing} (a parent of {save_dir}) is not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"--save_dir: cannot write in {existing} (permission denied)")


def check_min_agreement(agreement, minimum, index):
    """A UserError where the INT8 and FP32 class maps of calibration image ``index`` agree on less than
    ``minimum`` of the pixels: such a model is not written (``--min_agreement`` lowers the bar)."""
    if agreement < minimum:
        raise UserError(f"--min_agreement {minimum:g}: INT8 and FP32 agree on only {100 * agreement:.1f}% of the "
                        f"pixels of calibration image {index}; nothing written (more --calib_images or another "
                        f"--algo may help; --min_agreement 0 writes it anyway)")


def calibration_indices(size, count):
    """``count`` sample indices spread evenly over a dataset of ``size`` samples (all of them when it has fewer)."""
    if count >= size:
        return list(range(size))
    return sorted(set(np.linspace(0, size - 1, count).round().astype(int).tolist()))


def calibration_dataset(builder, cfg):
    """The config's ``train_dataset`` read through the validation transforms (no random augmentation)."""
    train_cfg = cfg.dic.get('train_dataset')
    if not isinstance(train_cfg, dict) or 'type' not in train_cfg:
        raise UserError(f"{cfg.path}: no 'train_dataset' section to calibrate on")
    transforms = (cfg.dic.get('val_dataset') or {}).get('transforms') or [{'type': 'Normalize'}]
    dataset = builder.build_component(dict(train_cfg, transforms=transforms), 'train_dataset')
    if len(dataset) == 0:
        raise UserError(f"{cfg.path}: train_dataset has no samples to calibrate on")
    return dataset, transforms


def _predictor(program, params, int8, threads=1):
    from paddle.inference import Config, create_predictor

    from paddle_models.core.exported import ONEDNN_INT8_OPS, cpu_config

    config = Config(program, params)
    config.disable_glog_info()
    config.switch_ir_optim(True)
    return create_predictor(cpu_config(config, threads, onednn=True, int8=list(ONEDNN_INT8_OPS) if int8 else False))


def _run(predictor, data):
    handle = predictor.get_input_handle(predictor.get_input_names()[0])
    handle.reshape(list(data.shape))
    handle.copy_from_cpu(data)
    predictor.run()
    return predictor.get_output_handle(predictor.get_output_names()[0]).copy_to_cpu()


def check_agreement(fp32_dir, int8_dir, data):
    """Share of pixels where the FP32 program (oneDNN; logits) and the INT8 program (oneDNN INT8; class ids) pick
    the same class."""
    fp32 = _run(_predictor(os.path.join(fp32_dir, PROGRAM_FILE), os.path.join(fp32_dir, PARAMS_FILE), False), data)
    try:
        int8 = _run(_predictor(os.path.join(int8_dir, PROGRAM_FILE), os.path.join(int8_dir, PARAMS_FILE), True), data)
    except Exception as err:  # noqa: BLE001  (Paddle's C++ errors; named in the message)
        raise RuntimeError(f"the quantized program does not run with oneDNN INT8: {error_line(err, default=err)}") \
            from err
    return float(np.mean(np.argmax(fp32, axis=1) == int8))


def quantize(args):
    """Export, calibrate, quantize and write ``args.save_dir`` (this process must be in legacy mode)."""
    import paddle
    from paddle.static.quantization import PostTrainingQuantization
    from tqdm import tqdm

    from paddle_models.core.checkpoint import load_model_weights
    from paddle_models.core.config import Builder, load_config
    from paddle_models.core.export import export_model
    from paddle_models.core.folders import ReplacingWrite
    from paddle_models.core.exported import ONEDNN_INT8_OPS
    from paddle_models.core.legacy import append_output_op, fuse_ready_conv_bias
    from paddle_models.core.visualize import config_classes

    cfg = load_config(args.config, args.opts, require=('model',))
    paddle.set_device('cpu')
    builder = Builder(cfg)
    dataset, transforms = calibration_dataset(builder, cfg)
    indices = calibration_indices(len(dataset), args.calib_images)
    if len(indices) < args.calib_images:
        logger.warning("--calib_images %d: train_dataset has only %d images; calibrating on all of them",
                       args.calib_images, len(indices))
    model = builder.model()
    load_model_weights(model, args.model_path)

    save_dir = os.path.abspath(args.save_dir)
    write = ReplacingWrite(save_dir)  # locked: one writer; the leftovers of killed runs removed
    tmp_dir = write.open()
    try:
        fp32_dir = os.path.join(tmp_dir, 'fp32')
        try:
            class_names, palette = config_classes(cfg.dic, getattr(model, 'num_classes', None))
            info = export_model(model, fp32_dir, output_op='none', transforms=transforms, portable=False,
                                class_names=class_names, palette=palette)
        except TRACE_ERRORS as err:
            raise UserError(f"{cfg.path}: model {cfg.dic['model'].get('type')} cannot be quantized: tracing it as "
                            f"a legacy program (FLAGS_enable_pir_api=0) failed: "
                            f"{error_line(err, default=type(err).__name__)}") from None
        if info['program_format'] != 'legacy':
            raise RuntimeError("the export wrote a PIR program; run this tool with FLAGS_enable_pir_api=0")
        fused = fuse_ready_conv_bias(os.path.join(fp32_dir, PROGRAM_FILE))  # conv + bias as one oneDNN (INT8) conv
        logger.debug("%d convolution biases rewritten for oneDNN's conv + bias fusion", fused)

        images = []  # read once (with a progress bar), reused by the calibration's second pass (KL, hist)

        def loader():
            if len(images) < len(indices):
                images.clear()
                for index in tqdm(indices, desc='calibration images', unit='img', file=sys.stderr):
                    images.append(np.ascontiguousarray(dataset[index]['img'], dtype='float32')[np.newaxis])
                    yield {'x': images[-1]}
            else:
                for image in images:
                    yield {'x': image}

        paddle.enable_static()
        try:
            executor = paddle.static.Executor(paddle.CPUPlace())
            ptq = PostTrainingQuantization(
                executor=executor, model_dir=fp32_dir, model_filename=PROGRAM_FILE, params_filename=PARAMS_FILE,
                data_loader=loader, batch_nums=len(indices), algo=args.algo,
                quantizable_op_type=list(QUANTIZED_OPS), weight_quantize_type='channel_wise_abs_max',
                onnx_format=True)
            ptq.quantize()
            quant_dir = os.path.join(tmp_dir, 'quant')
            ptq.save_quantized_model(quant_dir, model_filename=PROGRAM_FILE, params_filename=PARAMS_FILE)
            append_output_op(quant_dir, tmp_dir, 'argmax', executor)
        finally:
            paddle.disable_static()
        shutil.rmtree(quant_dir)

        agreement = check_agreement(fp32_dir, tmp_dir, images[0])
        level = logging.WARNING if agreement < WARN_AGREEMENT else logging.INFO
        logger.log(level, "INT8 and FP32 agree on %.1f%% of the pixels of calibration image %d",
                   100 * agreement, indices[0])
        check_min_agreement(agreement, args.min_agreement, indices[0])

        with open(os.path.join(fp32_dir, DEPLOY_FILE), encoding='utf-8') as f:
            deploy = yaml.safe_load(f)['Deploy']
        deploy.update({
            'model': PROGRAM_FILE,
            'params': PARAMS_FILE,
            'output_op': 'argmax',
            'output_dtype': 'int32',
            'precision': 'int8',
            'enable_mkldnn': True,
            'quantization': {
                'method': 'post-training',
                'algo': args.algo,
                'calib_images': len(indices),
                'quantized_ops': list(QUANTIZED_OPS),
                'int8_ops': list(ONEDNN_INT8_OPS),
                'check_agreement': round(agreement, 4),
            },
        })
        deploy.pop('mkldnn_error', None)
        with open(os.path.join(tmp_dir, DEPLOY_FILE), 'w', encoding='utf-8') as f:
            yaml.safe_dump({'Deploy': deploy}, f, default_flow_style=False, sort_keys=False)
        shutil.rmtree(fp32_dir)
        write.commit()
    except BaseException:
        write.abort()
        raise
    logger.info("wrote the INT8 program to %s; run it with deploy/python/infer.py --config %s", save_dir,
                os.path.join(save_dir, DEPLOY_FILE))
    return {'save_dir': save_dir, 'deploy_yaml': os.path.join(save_dir, DEPLOY_FILE), 'agreement': agreement,
            'calib_images': len(indices)}


def main(argv=None):
    """Command-line entry: returns what :func:`quantize` returns (None when the work ran in a subprocess)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    check_args(args)
    cli.log_to_stderr(logger.name)
    if not legacy_mode():
        return run_in_legacy_mode(__file__, argv)
    return quantize(args)


if __name__ == '__main__':
    from paddle_models.core import cli

    cli.main_wrapper(main)
