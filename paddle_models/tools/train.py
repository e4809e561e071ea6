"""Train a segmentation model from a PaddleSeg-format config (the logic of the repository's ``train.py``).

    python -m paddle_models.tools.train --config configs/quickstart.yml    # or: python train.py ...
    python -m paddle.distributed.launch --gpus 0,1 train.py --config configs/hardnet.yml
"""
import paddle_models  # noqa: F401  (registers every component)
from paddle_models.core import cli, logger
from paddle_models.core.config import Builder, load_config
from paddle_models.core.profiler import parse_profiler_options
from paddle_models.core.train import repeat_dataset, set_seed, train


def build_parser():
    parser = cli.parser('Train a segmentation model.')
    cli.add_config_args(parser)
    parser.add_argument('--save_dir', default='./output', help='Where checkpoints and logs go.')
    parser.add_argument('--iters', type=cli.positive_int, default=None,
                        help='Training iterations (overrides the config).')
    parser.add_argument('--batch_size', type=cli.positive_int, default=None, help='Images per device per iteration.')
    parser.add_argument('--learning_rate', type=float, default=None, help='Base learning rate.')
    parser.add_argument('--do_eval', action='store_true', help='Evaluate every --save_interval iterations.')
    parser.add_argument('--use_vdl', action='store_true', help='Log scalars to VisualDL in --save_dir.')
    parser.add_argument('--save_interval', type=cli.positive_int, default=1000,
                        help='Iterations between checkpoints.')
    parser.add_argument('--log_iters', type=cli.positive_int, default=10, help='Iterations between log lines.')
    parser.add_argument('--keep_checkpoint_max', type=cli.non_negative_int, default=5,
                        help='Most iter_N checkpoints kept (0: all).')
    parser.add_argument('--resume_model', default=None, help='An iter_N checkpoint folder to continue from.')
    parser.add_argument('--seed', type=cli.seed_int, default=None, help='Random seed for a reproducible run.')
    parser.add_argument('--num_workers', type=cli.non_negative_int, default=0, help='Data loading worker processes.')
    parser.add_argument('--precision', default='fp32', choices=['fp32', 'fp16'], help='fp16 (AMP) needs a GPU.')
    parser.add_argument('--amp_level', default='O1', choices=['O1', 'O2'], help='AMP level with fp16.')
    parser.add_argument('--use_ema', action='store_true',
                        help='Keep an exponential moving average of the weights: saved as ema_model.pdparams in '
                             'each checkpoint, evaluated with --do_eval (best in ema_best_model/).')
    parser.add_argument('--profiler_options', default=None,
                        help='Profile some iterations, e.g. "batch_range=[10,20]; profile_path=out/profile.json" '
                             '(PaddleSeg\'s keys: batch_range, state, sorted_key, tracer_option, profile_path, '
                             'exit_on_finished).')
    parser.add_argument('--repeats', type=cli.positive_int, default=1,
                        help='Repeat the training samples this many times in each epoch. Default: 1.')
    cli.add_data_format_arg(parser)
    return parser


def parse_args(argv=None):
    return build_parser().parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    cli.check_data_format(args.data_format)
    if args.profiler_options is not None:
        parse_profiler_options(args.profiler_options)
    cfg = load_config(args.config, args.opts, args.learning_rate, args.batch_size, args.iters,
                      require=('model', 'train_dataset', 'loss', 'optimizer', 'lr_scheduler', 'batch_size', 'iters'))
    cli.set_device(args.device, args.precision)
    set_seed(args.seed)
    builder = Builder(cfg)
    train_dataset = repeat_dataset(builder.dataset('train_dataset'), args.repeats)
    val_dataset = builder.dataset('val_dataset') if args.do_eval else None
    if args.do_eval and val_dataset is None:
        raise cli.UserError(f"{args.config}: --do_eval needs a val_dataset section")
    model = builder.model()
    losses = builder.losses()
    optimizer = builder.optimizer(model, builder.lr_scheduler())
    repeated = f" ({args.repeats} x {len(train_dataset) // args.repeats})" if args.repeats > 1 else ''
    logger.info(f"Config {args.config}: {type(model).__name__}, {len(train_dataset)} training samples{repeated}")
    return train(model, train_dataset, losses, optimizer, save_dir=args.save_dir, iters=cfg.dic['iters'],
                 batch_size=cfg.dic['batch_size'], val_dataset=val_dataset, resume_model=args.resume_model,
                 save_interval=args.save_interval, log_iters=args.log_iters, num_workers=args.num_workers,
                 use_vdl=args.use_vdl, keep_checkpoint_max=args.keep_checkpoint_max, precision=args.precision,
                 amp_level=args.amp_level, test_config=cfg.dic.get('test_config'), do_eval=args.do_eval,
                 seed=args.seed, use_ema=args.use_ema, profiler_options=args.profiler_options,
                 config=cfg.dic)

if __name__ == '__main__':
    cli.main_wrapper(main)
