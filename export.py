"""Export a trained model to a static graph for Paddle Inference (or to ONNX with ``--format onnx``, or for Paddle
Inference's OpenVINO engine with ``--format openvino``), with deploy.yaml: the command-line entry point of
``paddle_models.tools.export``, where the flags and the logic live (``python -m paddle_models.tools.export`` is the
same tool, for an installed package).

    python export.py --config configs/hardnet.yml --model_path output/best_model/model.pdparams \
        --save_dir output/inference_model [--format onnx|openvino]
    python export.py --model hardnet_cityscapes --save_dir output/hardnet_cityscapes   # a published checkpoint
"""
from paddle_models.core import cli
from paddle_models.tools.export import main, parse_args  # noqa: F401  (import export; export.main([...]) works)

if __name__ == '__main__':
    cli.main_wrapper(main)
