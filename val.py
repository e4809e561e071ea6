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
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    cfg = load_config(args.config, args.opts, require=('model', 'val_dataset'))
    if not args.model_path:
        raise cli.UserError("--model_path is required: the weights to evaluate")
    cli.set_device(args.device, args.precision)
    builder = Builder(cfg)
    options = cli.inference_options(args, cfg.dic.get('test_config'), 'aug_eval')
    val_dataset = builder.dataset('val_dataset')
    model = builder.model()
    load_model_weights(model, args.model_path)
    return evaluate(model, val_dataset, precision=args.precision, amp_level=args.amp_level, **options)


if __name__ == '__main__':
    cli.main_wrapper(main)
