"""Class names for the concept field: the model's labels, ImageNet's for a 1000-class model,
else "class N"; and a search for name completion."""

import difflib

from deepdream_onnx.labels import class_names


def classes(net):
    """The classifier's class names in index order, or None for a model without a classifier."""
    if net.logits is None:
        return None
    return class_names(net.info(net.logits)["channels"], net.labels)


def search(names, query, limit=10):
    """[(index, name)] of up to limit classes matching query, best first.

    An index matches itself; names match case-insensitively, whole or by one of their
    comma-separated synonyms first, then by a synonym's or a word's start, then anywhere;
    with none of those, the closest spellings.
    """
    if not names:
        return []
    query = " ".join(query.lower().split())
    if not query:
        return list(enumerate(names))[:limit]
    ranked = []
    if query.isdigit() and int(query) < len(names):
        ranked.append((-1, int(query)))
    for i, name in enumerate(names):
        rank = _rank(name.lower(), query)
        if rank is not None:
            ranked.append((rank, i))
    if not ranked:
        synonyms = {s.strip(): i for i, name in reversed(list(enumerate(names))) for s in name.lower().split(",")}
        close = difflib.get_close_matches(query, list(synonyms), n=limit, cutoff=0.6)
        ranked = [(k, synonyms[s]) for k, s in enumerate(close)]
    seen, matches = set(), []
    for _, i in sorted(ranked):
        if i not in seen:
            seen.add(i)
            matches.append((i, names[i]))
    return matches[:limit]


def _rank(name, query):
    synonyms = [s.strip() for s in name.split(",")]
    if name == query or query in synonyms:
        return 0
    if any(s.startswith(query) for s in synonyms):
        return 1
    if any(word.startswith(query) for word in name.replace(",", " ").split()):
        return 2
    if query in name:
        return 3
    return None
