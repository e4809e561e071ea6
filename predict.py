"""Predict images with a trained model, pseudo-colour PNGs and overlays: the command-line entry point of
``paddle_models.tools.predict``, where the flags and the logic live (``python -m paddle_models.tools.predict`` is
the same tool, for an installed package).

    python predict.py --config configs/quickstart.yml --model_path output/best_model/model.pdparams \
        --image_path some.jpg --save_dir output/result
"""
from paddle_models.core import cli
from paddle_models.tools.predict import main, parse_args  # noqa: F401  (import predict; predict.main([...]) works)

if __name__ == '__main__':
    cli.main_wrapper(main)
