"""Evaluate a trained model on the config's val_dataset, or an exported one (``--inference_model DIR``: the
Paddle Inference program, FP32 or INT8, or the ONNX model of an export folder, as its deploy.yaml says).

    python -m paddle_models.tools.val --config configs/quickstart.yml --model_path output/best_model/model.pdparams
    python -m paddle_models.tools.val --config configs/quickstart.yml --inference_model output/inference_model

The repository's ``val.py`` is this module's command-line entry point (``python val.py`` takes the same flags).
"""
import paddle_models  # noqa: F401  (registers every component)
from paddle_models.core import cli, logger
from paddle_models.core.checkpoint import load_model_weights
from paddle_models.core.config import Builder, load_config
from paddle_models.core.evaluate import evaluate, evaluate_inference_model
from paddle_models.core.visualize import config_classes


def build_parser():
    parser = cli.parser('Evaluate a segmentation model.')
    cli.add_config_args(parser)
    parser.add_argument('--model_path', default=None, help='Weights (.pdparams or a checkpoint folder).')
    cli.add_model_arg(parser)
    parser.add_argument('--inference_model', default=None, metavar='DIR',
                        help='Evaluate the exported model in DIR (export.py --save_dir: Paddle program or ONNX, as '
                             'DIR/deploy.yaml says) instead of --model_path, batch 1.')
    cli.add_inference_args(parser, '--aug_eval')
    parser.add_argument('--num_workers', type=cli.non_negative_int, default=0,
                        help='Unused (kept for PaddleSeg compatibility).')
    parser.add_argument('--precision', default='fp32', choices=['fp32', 'fp16'], help='fp16 (AMP) needs a GPU.')
    parser.add_argument('--amp_level', default='O1', choices=['O1', 'O2'], help='AMP level with fp16.')
    parser.add_argument('--auc_roc', type=cli.str2bool, nargs='?', const=True, default=None,
                        help='Also report the AUC-ROC of the class probabilities (--auc_roc or --auc_roc True). '
                             'Default: test_config.auc_roc, else False.')
    cli.add_data_format_arg(parser)
    return parser


def parse_args(argv=None):
    return build_parser().parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    cli.resolve_model_arg(args)
    cli.check_data_format(args.data_format)
    cfg = load_config(args.config, args.opts, require=('model', 'val_dataset'))
    if args.inference_model is not None:
        return _evaluate_export(args, cfg)
    if not args.model_path:
        raise cli.UserError("--model_path is required: the weights to evaluate (or --inference_model DIR)")
    cli.set_device(args.device, args.precision)
    builder = Builder(cfg)
    test_config = cfg.dic.get('test_config') or {}
    options = cli.inference_options(args, test_config, 'aug_eval')
    if not isinstance(test_config.get('auc_roc', False), bool):
        raise cli.UserError(f"{args.config}: test_config.auc_roc must be true or false, got "
                            f"{test_config['auc_roc']!r}")
    options['auc_roc'] = test_config.get('auc_roc', False) if args.auc_roc is None else args.auc_roc
    val_dataset = builder.dataset('val_dataset')
    model = builder.model()
    load_model_weights(model, args.model_path)
    class_names, _ = config_classes(cfg.dic, val_dataset.num_classes)
    return evaluate(model, val_dataset, precision=args.precision, amp_level=args.amp_level,
                    class_names=class_names, **options)


def _evaluate_export(args, cfg):
    """``--inference_model DIR``: the exported model on the config's val set, metrics as the dynamic graph's."""
    from paddle_models.core.exported import InferenceModel

    if args.model_path:
        raise cli.UserError("--model_path and --inference_model exclude each other: evaluate the weights or the "
                            "exported model")
    flags = cli.inference_options(args, None, 'aug_eval')
    if flags.get('aug_eval') or flags.get('is_slide'):
        raise cli.UserError("--inference_model runs the exported model as it is: --aug_eval and --is_slide are "
                            "not supported with it")
    if args.precision != 'fp32':
        raise cli.UserError("--precision fp16 applies to the dynamic graph; the exported model runs at the "
                            "precision it was exported with")
    ignored = sorted(k for k in cli.inference_options(args, cfg.dic.get('test_config'), 'aug_eval')
                     if k in ('aug_eval', 'is_slide'))
    if ignored:
        logger.warning(f"--inference_model: test_config {', '.join(ignored)} ignored (the exported model "
                           f"runs as it is)")
    test_config = cfg.dic.get('test_config') or {}
    auc_roc = test_config.get('auc_roc', False) if args.auc_roc is None else args.auc_roc
    if not isinstance(auc_roc, bool):
        raise cli.UserError(f"{args.config}: test_config.auc_roc must be true or false, got {auc_roc!r}")
    cli.set_device(args.device)
    val_dataset = Builder(cfg).dataset('val_dataset')
    runner = InferenceModel(args.inference_model)
    # the per-class lines name the classes as the export's deploy.yaml does, else as the config's dataset
    class_names, _ = config_classes(cfg.dic, val_dataset.num_classes)
    return evaluate_inference_model(runner, val_dataset, auc_roc=auc_roc, class_names=class_names)


if __name__ == '__main__':
    cli.main_wrapper(main)
