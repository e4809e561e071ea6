"""paddle_models.errors.error_line: the one reader of "the informative line" of an error or a child's stderr."""
from paddle_models.errors import error_line


def test_error_line_picks_the_first_or_last_non_blank_line():
    text = "\n  Traceback (most recent call last):  \n\n  [Hint: x]\nerror: --config: a.yml does not exist\n\n"
    assert error_line(text) == "error: --config: a.yml does not exist"
    assert error_line(text, 'first') == "Traceback (most recent call last):"
    assert error_line(text, skip=('error:',)) == "[Hint: x]"
    assert error_line(text, 'first', skip=('Traceback', '[')) == "error: --config: a.yml does not exist"


def test_error_line_defaults_and_exceptions():
    assert error_line('') == 'no output' and error_line(None) == 'no output'
    assert error_line(' \n\t\n', default='exit code 3') == 'exit code 3'
    assert error_line(ValueError("bad value\nsecond line")) == 'second line'
    assert error_line(ValueError("bad value\nsecond line"), 'first') == 'bad value'
    assert error_line(RuntimeError(), default='RuntimeError') == 'RuntimeError'
