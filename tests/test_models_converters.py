"""Model converters are registered explicitly (``registry.register_converter``) for every architecture they serve."""
import paddle_models  # noqa: F401  (registers every component)
from paddle_models.models import segformer, segnext
from paddle_models.registry import CONVERTERS
from paddleseg.cvlibs import manager


def test_segformer_and_segnext_converters_serve_every_registered_variant():
    for arch in [f'SegFormer_B{i}' for i in range(6)]:
        assert arch in manager.MODELS.components_dict, arch
        assert CONVERTERS[arch]['hf'] is segformer.convert_hf_weights
        assert CONVERTERS[arch]['mmseg'] is segformer.convert_mmseg_weights
    for arch in ('SegNeXt_T', 'SegNeXt_S', 'SegNeXt_B', 'SegNeXt_L'):
        assert arch in manager.MODELS.components_dict, arch
        assert CONVERTERS[arch]['mmseg'] is segnext.convert_mmseg_weights
