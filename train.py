"""Train a segmentation model from a PaddleSeg-format config: the command-line entry point of
``paddle_models.tools.train``, where the flags and the logic live (``python -m paddle_models.tools.train`` is the
same tool, for an installed package).

    python train.py --config configs/quickstart.yml
    python -m paddle.distributed.launch --gpus 0,1 train.py --config configs/hardnet.yml
"""
from paddle_models.core import cli
from paddle_models.tools.train import main, parse_args  # noqa: F401  (import train; train.main([...]) works)

if __name__ == '__main__':
    cli.main_wrapper(main)
