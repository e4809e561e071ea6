"""paddle_models/core/cli.py's ``main_wrapper`` tells user errors apart by type only, and the training loader hands a
UserError raised in a DataLoader worker to the main process as that UserError (type and message)."""
import subprocess
import sys
import textwrap

import numpy as np
import paddle
import pytest

from conftest import REPO
from paddle_models.core.train import _EpochBatches, _raise_carried, _SeededSamples, collate_train
from paddle_models.errors import UserError

pytestmark = pytest.mark.paddle26


def run_wrapped(raise_line):
    """Exit code and stderr lines of a process whose ``main`` (run by ``main_wrapper``) executes ``raise_line``."""
    code = textwrap.dedent(f"""
        from paddle_models.core.cli import main_wrapper
        from paddle_models.errors import UserError

        class BadLabel(UserError):
            pass

        def main():
            {raise_line}

        main_wrapper(main)
    """)
    proc = subprocess.run([sys.executable, '-c', code], cwd=REPO, capture_output=True, text=True, timeout=300)
    return proc.returncode, [line for line in proc.stderr.splitlines() if line.strip()]


def test_user_errors_are_one_line_by_type():
    assert run_wrapped("raise BadLabel('a.png: label value 17 is out of range')") == \
        (2, ["error: a.png: label value 17 is out of range"])


def test_other_errors_mentioning_user_error_keep_their_traceback():
    code, lines = run_wrapped("raise RuntimeError('worker failed:\\nUserError: not this one')")
    assert code == 1
    assert lines[0].startswith('Traceback') and lines[-1] == 'UserError: not this one'


class _Samples(paddle.io.Dataset):
    """Six samples; reading sample 3 is the user's error."""

    def __len__(self):
        return 6

    def __getitem__(self, index):
        if index == 3:
            raise UserError(f"cannot read image: img{index}.png")
        return {'img': np.full([3, 4, 4], index, 'float32'), 'label': np.zeros([1, 4, 4], 'int64')}


@pytest.mark.parametrize('workers', [0, 2])
def test_a_worker_user_error_reaches_the_main_process_as_itself(workers):
    batches = _EpochBatches(paddle.io.BatchSampler(range(6), batch_size=2), skip=0)
    loader = paddle.io.DataLoader(_SeededSamples(_Samples(), seed=0), batch_sampler=batches, collate_fn=collate_train,
                                  num_workers=workers, return_list=True)
    seen = []
    with pytest.raises(UserError) as err:
        for images, labels in _raise_carried(loader):
            seen.append(int(images[0, 0, 0, 0]))
    assert type(err.value) is UserError and str(err.value) == "cannot read image: img3.png"
    assert seen == [0]  # the batches before the bad one arrive first, in order
