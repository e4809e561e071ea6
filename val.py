"""Evaluate a trained model on the config's val_dataset, or an exported one (``--inference_model DIR``): the
command-line entry point of ``paddle_models.tools.val``, where the flags and the logic live (``python -m
paddle_models.tools.val`` is the same tool, for an installed package).

    python val.py --config configs/quickstart.yml --model_path output/best_model/model.pdparams
    python val.py --config configs/quickstart.yml --inference_model output/inference_model
"""
from paddle_models.core import cli
from paddle_models.tools.val import main, parse_args  # noqa: F401  (import val; val.main([...]) works)

if __name__ == '__main__':
    cli.main_wrapper(main)
