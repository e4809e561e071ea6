"""The command-line tools, as package modules: ``train``, ``val``, ``predict``, ``export`` and ``list_pretrained``.

Each module holds a tool's flags (``parse_args(argv)``) and its logic (``main(argv)``, which returns what the tool
computed), so that the tools work wherever the package is installed:

    python -m paddle_models.tools.train --config configs/quickstart.yml --do_eval
    python -m paddle_models.tools.val --config configs/quickstart.yml --model_path output/best_model/model.pdparams

The repository's ``train.py``, ``val.py``, ``predict.py`` and ``export.py`` are thin entry points to these modules,
and ``paddle_models.train`` / ``evaluate`` / ``export`` (the notebook API) call their ``main``. The modules are not
imported here: ``import paddle_models`` stays as light as it was.
"""
