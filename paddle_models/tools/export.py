"""Export a trained model to a static graph for Paddle Inference (or to ONNX with ``--format onnx``, or for Paddle
Inference's OpenVINO engine with ``--format openvino``), with deploy.yaml. The logic of the repository's
``export.py``; ``python -m paddle_models.tools.export`` takes the same flags.

    python export.py --config configs/quickstart.yml --model_path output/best_model/model.pdparams \
        --save_dir output/inference_model
    python export.py --config configs/quickstart.yml --model_path output/best_model/model.pdparams \
        --save_dir output/onnx_model --format onnx
    python export.py --config configs/quickstart.yml --model_path output/best_model/model.pdparams \
        --save_dir output/onnx_openvino --format onnx --backend openvino     # the standalone OpenVINO runtime
    python export.py --config configs/hardnet.yml --model_path output/best_model/model.pdparams \
        --save_dir output/openvino_model --format openvino
    python deploy/python/infer.py --config output/inference_model/deploy.yaml --image_path some.jpg
"""
import sys

import paddle_models  # noqa: F401  (registers every component)
from paddle_models.core import cli, logger
from paddle_models.core.checkpoint import load_model_weights
from paddle_models.core.config import Builder, load_config
from paddle_models.core.export import export_model
from paddle_models.core.legacy import legacy_mode, run_in_legacy_mode
from paddle_models.core.visualize import config_classes

# what the openvino export re-runs in its legacy-mode child: this module by name (``__name__`` is '__main__' under
# ``python -m``), so that the same code runs whether called as export.py, as the module or through pm.export()
LEGACY_ENTRY = 'paddle_models.tools.export'


def build_parser():
    parser = cli.parser('Export a segmentation model for Paddle Inference.')
    cli.add_config_args(parser)
    parser.add_argument('--model_path', default=None, help='Weights (.pdparams or a checkpoint folder).')
    cli.add_model_arg(parser)
    parser.add_argument('--save_dir', default='./output/inference_model', help='Where the exported files go.')
    parser.add_argument('--input_shape', nargs='+', type=cli.dimension, default=None,
                        help='Fixed input shape N C H W (default: any batch and spatial size).')
    parser.add_argument('--output_op', default='argmax', choices=['argmax', 'softmax', 'none'],
                        help='Operation appended to the model output.')
    parser.add_argument('--format', default='paddle', choices=['paddle', 'onnx', 'openvino'],
                        help='paddle: Paddle Inference program (default); onnx: model.onnx for ONNX Runtime '
                             '(needs paddle2onnx and onnxruntime); openvino: a legacy Paddle program that '
                             'Paddle Inference runs with its OpenVINO engine on the CPU (Paddle 3.x).')
    parser.add_argument('--backend', default=None, choices=['onnxruntime', 'openvino'],
                        help='With --format onnx: the runtime the export is checked in and deploy.yaml names: '
                             'onnxruntime (default) or openvino (the standalone OpenVINO runtime, pip install '
                             'openvino). infer.py --backend can still pick either for the export.')
    parser.add_argument('--without_argmax', action='store_true', help='Same as --output_op none (PaddleSeg 2.6).')
    parser.add_argument('--with_softmax', action='store_true', help='Same as --output_op softmax (PaddleSeg 2.6).')
    return parser


def parse_args(argv=None):
    return build_parser().parse_args(argv)


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    cli.resolve_model_arg(args)
    if args.backend is not None and args.format != 'onnx':
        raise cli.UserError(f"--backend {args.backend} applies to --format onnx (an ONNX model runs in onnxruntime "
                            f"or openvino); --format {args.format} runs in Paddle Inference")
    if args.format == 'openvino' and not legacy_mode():  # legacy programs need a fresh Paddle import
        return run_in_legacy_mode(LEGACY_ENTRY, argv)
    cfg = load_config(args.config, args.opts, require=('model',))
    if args.input_shape is not None and len(args.input_shape) != 4:
        raise cli.UserError(f"--input_shape needs 4 values N C H W, got {args.input_shape}")
    output_op = 'softmax' if args.with_softmax else 'none' if args.without_argmax else args.output_op
    cli.set_device(args.device or 'cpu')
    builder = Builder(cfg)
    model = builder.model()
    if args.model_path:
        load_model_weights(model, args.model_path)
    else:
        logger.warning("No --model_path given: exporting the model with its initial weights.")
    transforms = (cfg.dic.get('val_dataset') or {}).get('transforms') or [{'type': 'Normalize'}]
    # deploy.yaml names and colours the classes as the config's dataset does (class N / default colours otherwise)
    class_names, palette = config_classes(cfg.dic, getattr(model, 'num_classes', None))
    info = export_model(model, args.save_dir, input_shape=args.input_shape, output_op=output_op,
                        transforms=transforms, fmt=args.format, class_names=class_names, palette=palette,
                        backend=args.backend)
    logger.info(f"Exported to {args.save_dir}")
    return info


if __name__ == '__main__':
    cli.main_wrapper(main)
