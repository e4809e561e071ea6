"""The docs cannot rot: every shell command block in README.md and docs/*.md either runs here or says why it cannot,
and every relative link (file and anchor) in those pages resolves.

A shell block (```bash, ```sh, ```shell or ```console) carries a marker on the line before its fence:

- ``<!-- doc-test: NOTE -->``: the block runs here, with the tiny settings of ``SUBSTITUTIONS`` below;
- ``<!-- not-tested: REASON -->``: it cannot run here; REASON says why (GPU, network, long (benchmark), ...).

The ``doc-test`` blocks of one page run in the order they appear, in one temporary working directory (so the tour's
export can use the model its train block wrote), each command line as its own process; a line must exit with 0.
Nothing is copied: the repository is put on PYTHONPATH and its paths are made absolute.
"""
import os
import re
import shlex
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import REPO

SHELL_LANGS = ('bash', 'sh', 'shell', 'console')
MARKER = re.compile(r'^<!--\s*(doc-test|not-tested):\s*(.*?)\s*-->$')

# The tiny settings a doc-test block runs with, applied to each command line in this order (documented here, the
# one place that says how a documented command differs from what the test runs):
#  1. an install prefix (`python3 -m venv ...`, `. .venv/bin/activate`, `pip install ...`, joined by `&&`) is left
#     out: the test runs in the environment it was started from, which CI builds with exactly those commands;
#  2. a leading `python` is the interpreter running the test;
#  3. a relative path into the repository (train.py, val.py, predict.py, export.py, configs/, deploy/, tools/) is
#     made absolute, so the command runs from the temporary working directory, where output/ is written;
#  4. train.py and `-m paddle_models.tools.train` get `--iters 2 --batch_size 2` appended (later flags win);
#  5. `img.jpg` is a 64x64 RGB image the test writes into the working directory beforehand.
REPO_PATHS = ('train.py', 'val.py', 'predict.py', 'export.py', 'configs/', 'deploy/', 'tools/')
TRAIN_TINY = ['--iters', '2', '--batch_size', '2']
INSTALL_STEPS = ('python3 -m venv ', '. .venv/bin/activate', 'source .venv/bin/activate', 'pip install ')

# what the doc-test blocks of a page must leave in the working directory (files written, not only exit codes)
EXPECTED_FILES = {
    'README.md': ['output/quickstart/best_model/model.pdparams', 'output/quickstart/config.yml',
                  'output/qs/best_model/model.pdparams', 'output/result/pseudo_color_prediction/img.png',
                  'output/inference_model/deploy.yaml', 'output/infer/img.png'],
    'docs/getting_started.md': ['output/best_model/model.pdparams', 'output/result/pseudo_color_prediction/img.png',
                                'output/inference_model/deploy.yaml'],
}



def _pages():
    """README.md and every docs/*.md, as paths relative to the repository."""
    docs = sorted(name for name in os.listdir(os.path.join(REPO, 'docs')) if name.endswith('.md'))
    return ['README.md'] + [f"docs/{name}" for name in docs]


def _read(page):
    with open(os.path.join(REPO, page), encoding='utf-8') as f:
        return f.read().split('\n')


def _fences(lines):
    """[(language, first line index, last line index)] of the fenced code blocks of a page (indices of the fences)."""
    blocks, start, lang = [], None, None
    for i, line in enumerate(lines):
        stripped = line.strip()
        if not stripped.startswith('```'):
            continue
        if start is None:
            start, lang = i, stripped[3:].strip().lower()
        else:
            blocks.append((lang, start, i))
            start = None
    assert start is None, f"an unclosed code fence at line {start + 1}"
    return blocks


def shell_blocks(page):
    """[(line number of the fence, marker kind or None, marker note, the block's text)] of a page's shell blocks."""
    lines = _read(page)
    found = []
    for lang, start, end in _fences(lines):
        if lang not in SHELL_LANGS:
            continue
        before = start - 1
        while before >= 0 and not lines[before].strip():
            before -= 1
        match = MARKER.match(lines[before].strip()) if before >= 0 else None
        found.append((start + 1, match and match.group(1), match and match.group(2),
                      '\n'.join(lines[start + 1:end])))
    return found


def test_every_shell_block_is_tested_or_says_why_not():
    unmarked = [f"{page}:{line}" for page in _pages() for line, kind, note, _ in shell_blocks(page)
                if kind is None or not note]
    assert not unmarked, ("shell blocks with neither `<!-- doc-test: NOTE -->` nor `<!-- not-tested: REASON -->` "
                          "(with a note) on the line before: " + ', '.join(unmarked))


def test_the_marker_check_sees_an_unmarked_block(tmp_path, monkeypatch):
    """The parser behind the check above: a block without a marker is reported, one with a marker is not, and a
    Python block is out of scope."""
    page = tmp_path / 'page.md'
    page.write_text('text\n\n```bash\nls\n```\n\n<!-- not-tested: GPU -->\n```sh\nnvidia-smi\n```\n'
                    '```python\nprint(1)\n```\n', encoding='utf-8')
    monkeypatch.setattr(sys.modules[__name__], 'REPO', str(tmp_path))
    assert [(line, kind, note) for line, kind, note, _ in shell_blocks('page.md')] == [
        (3, None, None), (8, 'not-tested', 'GPU')]


def _commands(block):
    """The command lines of a block: continuations joined, comment lines and blank lines left out."""
    text = block.replace('\\\n', ' ')
    return [line.strip() for line in text.split('\n') if line.strip() and not line.strip().startswith('#')]


def tiny_argv(line, python=sys.executable, repo=REPO):
    """One documented command line as the argument list the test runs (the substitutions above, in order)."""
    steps = [step.strip() for step in line.split('&&')]
    steps = [step for step in steps if not step.startswith(INSTALL_STEPS)]               # 1
    assert len(steps) == 1, f"one command per line after the install steps, got {steps}"
    argv = shlex.split(steps[0], comments=True)
    if argv[0] in ('python', 'python3'):                                                  # 2
        argv[0] = python
    argv = [os.path.join(repo, arg) if arg.startswith(REPO_PATHS) and os.path.exists(os.path.join(repo, arg))
            else arg for arg in argv]                                                     # 3
    if argv[1:2] == [os.path.join(repo, 'train.py')] or argv[1:3] == ['-m', 'paddle_models.tools.train']:
        argv += TRAIN_TINY                                                                # 4
    return argv


def test_tiny_argv_applies_the_table():
    line = ('python3 -m venv .venv && . .venv/bin/activate && pip install -r requirements.txt && '
            'python train.py --config configs/quickstart.yml --save_dir output/x   # a comment')
    assert tiny_argv(line, python='PY', repo=REPO) == [
        'PY', os.path.join(REPO, 'train.py'), '--config', os.path.join(REPO, 'configs/quickstart.yml'),
        '--save_dir', 'output/x', *TRAIN_TINY]
    assert tiny_argv('python export.py --save_dir output/e', python='PY') == [
        'PY', os.path.join(REPO, 'export.py'), '--save_dir', 'output/e']


def _doc_test_pages():
    return [page for page in _pages() if any(kind == 'doc-test' for _, kind, _, _ in shell_blocks(page))]


@pytest.mark.parametrize('page', _doc_test_pages())
def test_doc_test_blocks_run(page, tmp_path):
    Image.fromarray(np.random.RandomState(0).randint(0, 256, (64, 64, 3), dtype=np.uint8)).save(tmp_path / 'img.jpg')
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([REPO, os.environ.get('PYTHONPATH', '')]).rstrip(os.pathsep),
               PATH=os.pathsep.join([os.path.dirname(sys.executable), os.environ.get('PATH', '')]),
               PYTHONDONTWRITEBYTECODE='1')
    for line_no, kind, _, block in shell_blocks(page):
        if kind != 'doc-test':
            continue
        for command in _commands(block):
            proc = subprocess.run(tiny_argv(command), cwd=str(tmp_path), env=env, capture_output=True, text=True,
                                  timeout=300)
            assert proc.returncode == 0, (f"{page}:{line_no}: `{command}` exited with {proc.returncode}:\n"
                                          + (proc.stdout + proc.stderr)[-3000:])
            assert 'Traceback' not in proc.stderr, f"{page}:{line_no}: `{command}`:\n{proc.stderr[-3000:]}"
    missing = [name for name in EXPECTED_FILES.get(page, []) if not (tmp_path / name).is_file()]
    assert not missing, f"{page}: the doc-test blocks did not write {missing}"


def _slug(heading):
    """GitHub's anchor for a heading: lower case, punctuation other than - and _ dropped, spaces to hyphens."""
    text = re.sub(r'[^\w\- ]', '', heading.strip().lower())
    return text.replace(' ', '-')


def _anchors(page):
    lines = _read(page)
    inside = {i for _, start, end in _fences(lines) for i in range(start, end + 1)}
    return {_slug(line.lstrip('#')) for i, line in enumerate(lines) if i not in inside and line.startswith('#')}


LINK = re.compile(r'!?\[[^\]]*\]\(([^)\s]+)\)')


def relative_links(page):
    """[(line number, target)] of the page's relative links and images, outside code blocks and code spans."""
    lines = _read(page)
    inside = {i for _, start, end in _fences(lines) for i in range(start, end + 1)}
    found = []
    for i, line in enumerate(lines):
        if i in inside:
            continue
        for target in LINK.findall(re.sub(r'`[^`]*`', '', line)):
            if not re.match(r'^[a-z][a-z0-9+.-]*:', target):
                found.append((i + 1, target))
    return found


def test_relative_links_resolve():
    broken = []
    for page in _pages():
        for line, target in relative_links(page):
            path, _, anchor = target.partition('#')
            resolved = os.path.normpath(os.path.join(os.path.dirname(page), path)) if path else page
            if not os.path.exists(os.path.join(REPO, resolved)):
                broken.append(f"{page}:{line}: {target} (no {resolved})")
                continue
            if anchor and resolved.endswith('.md') and anchor not in _anchors(resolved):
                broken.append(f"{page}:{line}: {target} (no heading #{anchor} in {resolved})")
    assert not broken, 'broken relative links: ' + '; '.join(broken)


def test_the_link_check_sees_a_broken_link(tmp_path, monkeypatch):
    (tmp_path / 'docs').mkdir()
    (tmp_path / 'docs' / 'a.md').write_text('# A page\n\n[b](b.md) [top](#a-page) [x](#nowhere) `[c](c.md)` '
                                            '[web](https://example.com)\n', encoding='utf-8')
    monkeypatch.setattr(sys.modules[__name__], 'REPO', str(tmp_path))
    assert relative_links('docs/a.md') == [(3, 'b.md'), (3, '#a-page'), (3, '#nowhere')]
    assert _anchors('docs/a.md') == {'a-page'}
