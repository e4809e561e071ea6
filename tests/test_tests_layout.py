"""The test suite's own layout: shared helpers live in tests/helpers.py (fixtures in conftest.py), so no test module
imports another -- importing one runs its module-level code and ties two files' private details together."""
import ast
import glob
import os

TESTS = os.path.dirname(os.path.abspath(__file__))


def imported_test_modules(source):
    """The ``test_*`` modules that ``source`` imports, anywhere in it (also inside functions)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names if alias.name.split('.')[0].startswith('test_')]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module \
                and node.module.split('.')[0].startswith('test_'):
            found.append(node.module)
    return found


def test_the_check_sees_both_import_forms():
    source = "import os\nimport test_a\ndef f():\n    from test_b import x\nfrom helpers import y\n"
    assert imported_test_modules(source) == ['test_a', 'test_b']


def test_no_test_module_imports_another():
    offenders = {}
    for path in sorted(glob.glob(os.path.join(TESTS, '*.py'))):
        with open(path, encoding='utf-8') as f:
            names = imported_test_modules(f.read())
        if names:
            offenders[os.path.basename(path)] = names
    assert offenders == {}, "move shared helpers to tests/helpers.py (fixtures to conftest.py)"
