"""The one reader of YAML files the user hands in (configs and their ``_base_`` files, ``deploy.yaml``).

``yaml.load(Loader=FullLoader)`` turns ``!!python/name:os.system`` into the real function and ``!!python/object/apply``
into a call; and a few hundred bytes of nested aliases (``b: [*a, *a, ...]``, ``c: [*b, *b, ...]``, ...) stand for
a billion values, which any walk over the result (a type check, a copy that does not share) visits one by one.
``load_yaml`` therefore reads with ``yaml.SafeLoader`` (plain YAML only: mappings, lists, strings, numbers, bools,
null, dates) and checks the composed node graph before anything is built from it:

- a tag that is not plain YAML (``!!python/...``, ``!custom``) is refused in one line naming the tag and the file;
- at most ``MAX_ALIASES`` aliases, and the document expanded (every alias counted as a copy of what it names) at
  most ``MAX_VALUES`` values; a recursive alias (a list that holds itself) is refused too.

The expanded size is counted over the node graph with each node's size computed once, so the check itself takes time
in proportion to the file, not to its expansion. Anchors and aliases within the bounds (a shared transform list, a
repeated mapping) load as before.
"""
import yaml

from paddle_models.errors import UserError

MAX_ALIASES = 1000          # a PaddleSeg config uses none, a hand-written one a few dozen at most
MAX_VALUES = 100_000        # values of the document with every alias expanded; configs have a few hundred
MAX_DEPTH = 200             # nesting of lists and mappings

_YAML_PREFIX = 'tag:yaml.org,2002:'
# The tags SafeLoader builds: plain YAML; anything else (python/..., a local !tag) is refused before construction.
_PLAIN_TAGS = frozenset(_YAML_PREFIX + name for name in ('null', 'bool', 'int', 'float', 'binary', 'timestamp',
                                                           'omap', 'pairs', 'set', 'str', 'seq', 'map', 'merge',
                                                           'value'))


def _shown_tag(tag):
    """The tag as written in the file (``!!python/name:os.system``)."""
    return '!!' + tag[len(_YAML_PREFIX):] if tag.startswith(_YAML_PREFIX) else tag


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader that counts aliases as it composes and refuses a document over the bounds before building it."""

    def __init__(self, stream, name):
        super().__init__(stream)
        self.file_name = name
        self.alias_count = 0

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            self.alias_count += 1
            if self.alias_count > MAX_ALIASES:
                raise UserError(f"{self.file_name}: more than {MAX_ALIASES} YAML aliases (*name); refusing to read "
                                f"the file")
        return super().compose_node(parent, index)

    def construct_document(self, node):
        _check_graph(node, self.file_name)
        return super().construct_document(node)


def _check_graph(root, name):
    """Refuse foreign tags, recursive aliases, deep nesting and an expansion over ``MAX_VALUES`` values; each node is
    sized once (``sizes``), so shared nodes cost nothing more."""
    sizes = {}
    in_progress = set()

    def size(node, depth):
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in in_progress:
            raise UserError(f"{name}: a YAML alias refers to a list or mapping that contains it (recursive alias); "
                            f"refusing to read the file")
        if depth > MAX_DEPTH:
            raise UserError(f"{name}: lists and mappings nested more than {MAX_DEPTH} deep; refusing to read the "
                            f"file")
        if node.tag not in _PLAIN_TAGS:
            shown = _shown_tag(node.tag)
            why = ' (python tags could run code)' if shown.startswith('!!python/') else ''
            line = f" at line {node.start_mark.line + 1}" if node.start_mark is not None else ''
            raise UserError(f"{name}: refusing the YAML tag {shown}{line}{why}; a config holds plain values only")
        in_progress.add(key)
        total = 1
        if isinstance(node, yaml.SequenceNode):
            total += sum(size(item, depth + 1) for item in node.value)
        elif isinstance(node, yaml.MappingNode):
            total += sum(size(k, depth + 1) + size(v, depth + 1) for k, v in node.value)
        in_progress.discard(key)
        sizes[key] = total
        if total > MAX_VALUES:
            raise UserError(f"{name}: the YAML expands to more than {MAX_VALUES} values through its aliases "
                            f"(*name); refusing to read the file")
        return total

    size(root, 0)


def load_yaml(stream, name):
    """The document of ``stream`` (an open text file or a string) read as plain YAML within the bounds above.

    Args:
        stream: What to read.
        name (str): The file's name, for messages.

    Returns:
        The document (None for an empty one).

    Raises:
        UserError: a foreign tag, too many aliases, too large an expansion, too deep nesting.
        yaml.YAMLError: the text is not YAML (the caller words it, as it knows the context).
    """
    loader = _BoundedLoader(stream, name)
    try:
        return loader.get_single_data()
    except RecursionError:
        raise UserError(f"{name}: lists and mappings nested too deeply; refusing to read the file") from None
    finally:
        loader.dispose()
