"""Shared test fixtures."""
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)  # the top-level tools (train.py, val.py, ...) are imported by tests

from paddle_models.utils.compat import preload_zlib  # noqa: E402  (imports the package, which does it too)

preload_zlib()  # before any test module imports paddle: Paddle 2.6.2 bundles a zlib that breaks the system one's users

import pytest  # noqa: E402

CAMVID_MINI = os.path.normpath(os.path.join(REPO, '..', 'shared', 'data', 'camvid_mini'))


def camvid_root():
    """Path of ../shared/data/camvid_mini. Skips the test where it is absent, fails under CI=true."""
    if os.path.isfile(os.path.join(CAMVID_MINI, 'train.txt')):
        return CAMVID_MINI
    message = f"camvid_mini not found at {CAMVID_MINI} (it lives beside the repo in ../shared/data)"
    if os.environ.get('CI') == 'true':
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture
def camvid():
    return camvid_root()
