"""Predict images with a trained model: pseudo-colour PNGs and overlays (the logic of the repository's
``predict.py``).

    python -m paddle_models.tools.predict --config configs/quickstart.yml \
        --model_path output/best_model/model.pdparams --image_path some.jpg --save_dir output/result

The repository's ``predict.py`` is this module's command-line entry point (same flags).
"""
import paddle_models  # noqa: F401  (registers every component)
from paddle_models.core import cli
from paddle_models.core.checkpoint import load_model_weights
from paddle_models.core.config import Builder, load_config
from paddle_models.core.predict_files import predict
from paddle_models.core.visualize import check_custom_color, config_classes


def build_parser():
    parser = cli.parser('Predict images with a segmentation model.')
    cli.add_config_args(parser)
    parser.add_argument('--model_path', default=None, help='Weights (.pdparams or a checkpoint folder).')
    cli.add_model_arg(parser)
    parser.add_argument('--image_path', default=None, help='An image, a folder of images or a .txt list.')
    parser.add_argument('--save_dir', default='./output/result', help='Where results go.')
    cli.add_inference_args(parser, '--aug_pred')
    parser.add_argument('--custom_color', nargs='+', type=int, default=None, metavar='V',
                        help='Colours replacing the start of the palette, as flat R G B values: class 0 gets the '
                             'first three, class 1 the next three, ... Default: test_config.custom_color, else '
                             "the dataset's palette, then PaddleSeg's (the colours deploy/python/infer.py uses).")
    return parser


def parse_args(argv=None):
    return build_parser().parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    cli.resolve_model_arg(args)
    cfg = load_config(args.config, args.opts, require=('model',))
    if not args.model_path:
        raise cli.UserError("--model_path is required: the weights to predict with")
    if not args.image_path:
        raise cli.UserError("--image_path is required: an image, a folder or a .txt list")
    cli.set_device(args.device)
    options = cli.inference_options(args, cfg.dic.get('test_config'), 'aug_pred')
    options['aug_pred'] = options.pop('aug_eval', False)
    custom_color = args.custom_color or (cfg.dic.get('test_config') or {}).get('custom_color')
    if custom_color is not None:
        check_custom_color(custom_color, '--custom_color' if args.custom_color else
                           f"{args.config}: test_config.custom_color")
    builder = Builder(cfg)
    model = builder.model()
    load_model_weights(model, args.model_path)
    _, palette = config_classes(cfg.dic, getattr(model, 'num_classes', None))  # the colours infer.py uses too
    return predict(model, args.image_path, builder.val_transforms(), args.save_dir, palette=palette,
                   num_classes=cfg.dic['model'].get('num_classes'), custom_color=custom_color, **options)


if __name__ == '__main__':
    cli.main_wrapper(main)
