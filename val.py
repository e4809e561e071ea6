"""Evaluate a trained model on the config's val_dataset.

    python val.py --config configs/quickstart.yml --model_path output/best_model/model.pdparams
"""
import paddle_models  # noqa: F401  (registers every component)
from paddle_models.core import cli
from paddle_models.core.checkpoint import load_model_weights
from paddle_models.core.config import Builder, load_config
from paddle_models.core.evaluate import evaluate


def parse_args(argv=None):
    parser = cli.parser('Evaluate a segmentation model.')
    cli.add_config_args(parser)
    parser.add_argument('--model_path', default=None, help='Weights (.pdparams or a checkpoint folder).')
    cli.add_inference_args(parser, '--aug_eval')
    parser.add_argument('--num_workers', type=int, default=0, help='Unused (kept for PaddleSeg compatibility).')
    parser.add_argument('--precision', default='fp32', choices=['fp32', 'fp16'], help='fp16 (AMP) needs a GPU.')
    parser.add_argument('--amp_level', default='O1', choices=['O1', 'O2'], help='AMP level with fp16.')
    parser.add_argument('--auc_roc', type=cli.str2bool, nargs='?', const=True, default=None,
                        help='Also report the AUC-ROC of the class probabilities (--auc_roc or --auc_roc True). '
                             'Default: test_config.auc_roc, else False.')
    cli.add_data_format_arg(parser)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    cli.check_data_format(args.data_format)
    cfg = load_config(args.config, args.opts, require=('model', 'val_dataset'))
    if not args.model_path:
        raise cli.UserError("--model_path is required: the weights to evaluate")
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
    return evaluate(model, val_dataset, precision=args.precision, amp_level=args.amp_level, **options)


if __name__ == '__main__':
    cli.main_wrapper(main)
