"""paddle_models: a PaddlePaddle model zoo for semantic segmentation following PaddleSeg's conventions.

Importing the package registers every model, backbone, loss, dataset and transform in
``paddleseg.cvlibs.manager``; where PaddleSeg has a component of the same name, ours replaces it.
"""
from .utils.compat import all_cpu_cores, preload_zlib

preload_zlib()  # before paddle: Paddle 2.6.2 bundles a zlib that breaks later zlib users (see utils/compat.py)

import warnings  # noqa: E402

warnings.filterwarnings("ignore", message="No ccache found")  # printed by paddle on import, not ours to fix

with all_cpu_cores():  # Paddle's import would pin its CPU kernels to one thread (see utils/compat.py)
    import paddleseg  # noqa: F401  (PaddleSeg registers its own components first; ours then replace them)

from . import layers, losses, datasets, transforms, backbones, models  # noqa: F401
from .safe_load import guard_paddleseg

guard_paddleseg()  # PaddleSeg's own models read their pretrained files without running code in them too

from .api import Segmenter, build_model, evaluate, export, load_weights, serve, train, visualize  # noqa: F401,E402
from .pretrained import get_pretrained, list_pretrained  # noqa: F401,E402

__version__ = '0.1.0'
