"""Models. Importing this package registers each model in ``paddleseg.cvlibs.manager.MODELS``."""
from .hardnet import HarDNet  # noqa: F401
