"""Reading YAML that a user (or anyone) wrote: plain data only, and of bounded size once expanded.

``yaml.safe_load`` already refuses object tags, but YAML anchors and aliases let a tiny file name a
huge structure (the "billion laughs": nine aliases of nine aliases of ... — a 600-byte spec became
2.1 GB once our code copied it). PyYAML builds such a document as a graph that shares its nodes, so
loading is cheap; every later copy (``dataclasses.asdict``, ``json.dumps``) expands it. We therefore
count the nodes the document would have *expanded* — each alias counts its whole target again — on
the composed graph, before constructing anything, and refuse past :data:`MAX_NODES`. A node that
contains an alias to itself (a recursive structure, which JSON cannot hold) is refused too.
"""

from __future__ import annotations

from typing import Any

import yaml

#: Nodes (scalars, lists, mappings) a document may have once every alias is expanded. A benchmark
#: spec with a large grid has a few hundred; 100 000 leaves room and still bounds the memory.
MAX_NODES = 100_000


class YamlError(ValueError):
    """YAML that cannot be read as plain data; the message names the source."""


def load_yaml(text: str, *, source: str = "YAML text", max_nodes: int = MAX_NODES) -> Any:
    """``yaml.safe_load(text)``, refusing documents whose alias expansion exceeds ``max_nodes``
    nodes or is recursive (:class:`YamlError`, naming ``source``)."""
    loader = yaml.SafeLoader(text)
    try:
        try:
            node = loader.get_single_node()
            if node is None:
                return None
            expanded_size(node, limit=max_nodes, source=source)
            return loader.construct_document(node)
        except yaml.YAMLError as exc:
            raise YamlError(f"{source} is not valid YAML data: {exc}") from None
        except RecursionError:  # PyYAML composes and constructs recursively
            raise YamlError(f"{source} is nested too deeply to be a spec; flatten it") from None
    finally:
        loader.dispose()


def expanded_size(node: yaml.Node, *, limit: int = MAX_NODES, source: str = "YAML text") -> int:
    """Number of nodes under ``node`` with every alias expanded (a shared node counts once per
    reference); raises :class:`YamlError` as soon as it passes ``limit`` or finds a cycle."""
    sizes: dict[int, int] = {}  # id(node) -> expanded size; memoised, so the walk is linear in the graph
    active: set[int] = set()  # nodes on the current path (a cycle revisits one of them)

    def size(current: yaml.Node) -> int:
        key = id(current)
        if key in sizes:
            return sizes[key]
        if key in active:
            raise YamlError(f"{source} has a recursive alias (a structure that contains itself at line "
                            f"{current.start_mark.line + 1}); write the data out without self-references")
        if isinstance(current, yaml.ScalarNode):
            return 1
        active.add(key)
        children = ([child for pair in current.value for child in pair] if isinstance(current, yaml.MappingNode)
                    else list(current.value))
        total = 1
        for child in children:
            total += size(child)
            if total > limit:
                raise YamlError(f"{source} expands to more than {limit:,} values through its aliases (*name "
                                f"references to &name anchors, from line {current.start_mark.line + 1}); a spec "
                                "is small plain data: write the repeated parts out or use fewer nested aliases")
        active.discard(key)
        sizes[key] = total
        return total

    return size(node)
