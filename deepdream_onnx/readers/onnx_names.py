"""Friendly names for the blobs of an imported ONNX model (what `--end NAME` accepts).

Every image-dependent float node output of an ONNX classifier is a blob.  blob_names gives each
a short, unique display name and a table of other accepted names (aliases), by the convention
that wrote the tensor names:

* PyTorch (torch.onnx, TorchScript exporter): `/layer3/layer3.1/relu_1/Relu_output_0`.  The
  scope segments rebuild the module path `layer3.1.relu_1`; a module that wrote one tensor
  shows as its path (`layer3.1.relu_1`, `features.0`, `fc`), else path + "." + op
  (`layer1.0.Add`, `layer1.0.relu.Relu_1`); ops outside any module show as the op (`Flatten`).
  Every module path and module prefix (`layer3`, `features.6`) is an alias of the last tensor
  written inside that module, in topological order; `path.Op` and the node name are aliases too.
* tf2onnx: `import/mixed4d_3x3_bottleneck_pre_relu:0` shows as `mixed4d_3x3_bottleneck_pre_relu`;
  `:k` stays only where another tensor has the same name without it.
* Caffe2 (the ONNX Model Zoo's BVLC GoogLeNet): each tensor is a Caffe blob + `_<version>`,
  versions counting writes (`conv1/7x7_s2_1` the convolution, `conv1/7x7_s2_2` its in-place
  ReLU).  A blob's first write shows as the Caffe blob name (`conv1/7x7_s2`, pre-ReLU as pycaffe
  has it); later writes keep their tensor name.  Recognized only when every tensor has that form
  with versions rising per blob, and the input (when given) looks like `data_0`.
* Anything else (dynamo's `conv2d_3`, `getitem`; old exporters' `input.4`): the tensor name.

Every raw tensor name is an alias.  Names are compared in canonical() form, the runtime's
'_'-for-'/' spelling: display names are unique in it, and an alias whose canonical form is a
display name's or is shared by aliases of different tensors is left out.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict

_TORCH = re.compile(r"((?:/[^/]+)*)/([^/]+)_output_(\d+)")
_TF = re.compile(r"(import/)?(.+):(\d+)")
_VERSIONED = re.compile(r"(.+)_(\d+)")
# Exporters whose `name_7` tensors are counters, not Caffe2 blob versions.
_NOT_CAFFE2 = ("pytorch", "tf2onnx", "keras", "onnxmltools", "skl2onnx", "paddle")


def canonical(name: str) -> str:
    """The spelling names are compared in: users may type '_' for '/'."""
    return name.replace("/", "_")


def blob_names(tensors, producer="", input_name=None):
    """(names, aliases) for the node outputs `tensors` (in topological order).

    names: one display name per tensor, same order (what `deepdream-onnx layers` lists; unique);
    aliases: {other accepted name: display name} (module prefixes, raw tensor names, ...); never
    an alias equal to a display name; no alias that is ambiguous between two tensors.
    producer: the model's producer_name; input_name: the image input's name, if known.
    """
    tensors = list(tensors)
    if len(set(tensors)) != len(tensors):
        raise ValueError("tensor names repeat; ONNX node outputs are unique")
    versions = _caffe2_versions(tensors, producer, input_name)
    if versions is not None:
        preferred = [blob if version == 1 else t for t, (blob, version) in zip(tensors, versions)]
        extra = []
    else:
        preferred, extra = _scoped_names(tensors)
    names = _unique(preferred, tensors)
    pairs = [(alias, names[i]) for alias, i in extra] + list(zip(tensors, names))
    return names, _unambiguous(pairs, names)


def _caffe2_versions(tensors, producer, input_name):
    """[(caffe blob, version)] per tensor when the names follow Caffe2's SSA form, else None."""
    if any(p in producer.lower() for p in _NOT_CAFFE2):
        return None
    if input_name is not None and not re.fullmatch(r".+_0", input_name):
        return None
    out, last = [], {}
    for t in tensors:
        m = _VERSIONED.fullmatch(t)
        # A blob's versions only rise, from 1 (0 is an input's or weight's): anything else is a
        # model whose names merely end in digits.  Caffe2's exporter made up OC2_DUMMY names
        # for outputs it added (the zoo's Reshape writes OC2_DUMMY_0).
        first = -1 if m and m.group(1).startswith("OC2_DUMMY") else 0
        if not m or int(m.group(2)) <= last.get(m.group(1), first):
            return None
        last[m.group(1)] = int(m.group(2))
        out.append((m.group(1), int(m.group(2))))
    return out


def _module_chain(scope):
    """Module paths, outermost first, of a PyTorch scope such as '/layer2/layer2.0/downsample/downsample.0'.

    The exporter writes a module's name from its last non-numeric atom ('layer2.0', 'downsample.0',
    'relu_1'), so a segment extending the previous one by '.digits' is a child by index, and any
    other segment an attribute of the module before.
    """
    chain, prev = [], ""
    for seg in scope.split("/")[1:]:
        path = chain[-1] if chain else ""
        if path and seg.startswith(path + "."):  # a full dotted path, as some versions write
            path = seg
        elif prev and seg.startswith(prev + "."):
            path += seg[len(prev):]
        else:
            path = f"{path}.{seg}" if path else seg
        chain.append(path)
        prev = seg
    return chain


def _scoped_names(tensors):
    """Preferred display names and [(alias, index)] for PyTorch, tf2onnx and other tensors."""
    torch, tf = {}, {}
    for i, t in enumerate(tensors):
        if m := _TORCH.fullmatch(t):
            scope, op, k = m.groups()
            torch[i] = (_module_chain(scope), op if k == "0" else f"{op}:{k}", scope, op, k)
        elif m := _TF.fullmatch(t):
            tf[i] = m.groups()
    inside, last = Counter(), {}
    for i, (chain, *_) in torch.items():
        inside.update(chain)
        last.update(dict.fromkeys(chain, i))
    bases = Counter(base for _, base, _ in tf.values())
    preferred, extra = list(tensors), []
    for i, (chain, op_part, scope, op, k) in torch.items():
        path = chain[-1] if chain else ""
        if not path:
            preferred[i] = op_part
        elif inside[path] == 1:
            preferred[i] = path
            extra.append((f"{path}.{op_part}", i))
        else:
            preferred[i] = f"{path}.{op_part}"
        if k == "0":
            extra.append((f"{scope}/{op}", i))  # the node's name, as Netron shows it
    extra += [(path, i) for path, i in last.items()]
    for i, (imported, base, k) in tf.items():
        preferred[i] = base if bases[base] == 1 or k == "0" else f"{base}:{k}"
        if imported:
            extra += [(f"{base}:{k}", i), (f"import/{preferred[i]}", i)]
    return preferred, extra


def _unique(preferred, raws):
    """Display names: the preferred one unless tensors share it, then the raw tensor name."""
    shared = Counter(canonical(p) for p in preferred)
    names, taken = [], set()
    for p, raw in zip(preferred, raws):
        tries = ([p] if shared[canonical(p)] == 1 else []) + [raw]
        # Only names colliding in canonical form ('a/b' and 'a_b') get this far.
        tries += [f"{raw}#{n}" for n in range(2, len(raws) + 2)]
        name = next(n for n in tries if canonical(n) not in taken)
        taken.add(canonical(name))
        names.append(name)
    return names


def _unambiguous(pairs, names):
    """{alias: display name} from (alias, display name) pairs, dropping clashes."""
    shown = {canonical(n) for n in names}
    targets = defaultdict(set)
    for alias, name in pairs:
        targets[canonical(alias)].add(name)
    return {alias: name for alias, name in pairs if canonical(alias) not in shown and len(targets[canonical(alias)]) == 1}
