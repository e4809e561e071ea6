"""notebooks/quickstart.ipynb: committed without outputs, and every cell runs (nbclient, a short training)."""
import json
import os
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK = os.path.join(REPO, 'notebooks', 'quickstart.ipynb')
STRIP = ("python -c \"import nbformat as n; p='notebooks/quickstart.ipynb'; b=n.read(p, 4); "
         "[c.update(outputs=[], execution_count=None) for c in b.cells if c.cell_type == 'code']; n.write(b, p)\"")


def test_committed_notebook_has_no_outputs():
    import nbformat  # test dependency (requirements-test.txt); imported here so that CI's Paddle 2.6.2 step,
    # which installs no notebook tools, can still collect this module
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == 'code']
    assert code
    dirty = [i for i, cell in enumerate(notebook.cells)
             if cell.cell_type == 'code' and (cell.outputs or cell.execution_count is not None)]
    assert not dirty, f"cells {dirty} of {NOTEBOOK} hold outputs; strip them before committing: {STRIP}"
    assert 'widgets' not in notebook.metadata


@pytest.fixture
def kernel_name(tmp_path, monkeypatch):
    """A kernel spec that runs this interpreter (the test venv's), found before any other named ``python3``."""
    spec_dir = tmp_path / 'jupyter' / 'kernels' / 'paddle-models-test'
    spec_dir.mkdir(parents=True)
    (spec_dir / 'kernel.json').write_text(json.dumps({
        'argv': [sys.executable, '-m', 'ipykernel_launcher', '-f', '{connection_file}'],
        'display_name': 'paddle_models tests', 'language': 'python'}))
    monkeypatch.setenv('JUPYTER_PATH', str(tmp_path / 'jupyter'))
    return 'paddle-models-test'


def test_notebook_runs_without_errors(tmp_path, monkeypatch, kernel_name):
    monkeypatch.setenv('QUICKSTART_ITERS', '10')
    monkeypatch.setenv('QUICKSTART_OUTPUT', str(tmp_path / 'out'))
    monkeypatch.setenv('OMP_NUM_THREADS', '1')
    import nbformat
    from nbclient import NotebookClient
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(notebook, timeout=300, kernel_name=kernel_name,
                            resources={'metadata': {'path': os.path.join(REPO, 'notebooks')}})
    client.execute()  # raises CellExecutionError, with the cell and its traceback, where a cell fails

    outputs = [out for cell in notebook.cells if cell.cell_type == 'code' for out in cell.outputs]
    assert not [out for out in outputs if out.output_type == 'error']
    images = [out for out in outputs if out.output_type == 'display_data' and 'image/png' in out.get('data', {})]
    assert len(images) == 2  # the predictions grid and the dynamic / Paddle Inference comparison
    text = ''.join(out.get('text', '') for out in outputs if out.output_type == 'stream')
    assert 'Paddle Inference gives the same masks: [True, True, True, True]' in text
    assert 'iter: 10/10' in text
    # training and evaluation show ipywidgets progress bars (tqdm.auto), as in AI Studio
    widgets = [out for out in outputs if out.output_type == 'display_data'
               and 'application/vnd.jupyter.widget-view+json' in out.get('data', {})]
    bars = [out['data'].get('text/plain', '') for out in widgets]
    assert any(bar.startswith('train:') for bar in bars), bars
    for path in ('train/best_model/model.pdparams', 'inference_model/deploy.yaml', 'example.png'):
        assert os.path.isfile(tmp_path / 'out' / path), path
