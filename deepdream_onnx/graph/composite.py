"""Composite ops: one node to the gradient builder, standard ONNX ops in every model written.

A composite op is differentiated as a whole, by a closed-form rule in vjp.VJP, where the
chain rule through its parts would take more passes over the tensors; make_model writes
it out as the standard ops that define it, under the same output names, so no model
holds anything but standard ONNX-domain ops.
"""

from onnx import helper

DOMAIN = "deepdream_onnx"


def caffe_lrn(x, window, k, beta, outputs, size):
    """CaffeLRN(X, window, k, beta) -> (Y, scale, power), Caffe's LRN across `size` channels:

    scale = k + conv(X^2, window) over the channel axis (window: (1, 1, size, 1, 1), alpha/size),
    power = scale^beta,  Y = X / power.
    """
    return helper.make_node("CaffeLRN", [x, window, k, beta], list(outputs), name=outputs[0], domain=DOMAIN,
                            size=size)


def lrn_pads(size):
    """Caffe's channel window: (size-1)//2 channels before, size//2 after."""
    return [(size - 1) // 2, 0, 0, size // 2, 0, 0]


def _expand_caffe_lrn(node, weights):
    x, window, k, beta = node.input
    y, scale, power = node.output
    size = next(helper.get_attribute_value(a) for a in node.attribute if a.name == "size")
    part = f"{y}/lrn/"
    make = helper.make_node
    # The channel-window sum as an (n x 1 x 1) convolution of a (N, 1, C, H, W) view, with
    # k as its bias: faster than onnxruntime's LRN kernel, and the 3-D form beats an (n x 1)
    # one over (N, 1, C, H*W) (C=192 at 144x256: 6.1 vs 8.2 ms).
    nodes = [
        make("Mul", [x, x], [part + "squares"], name=part + "squares"),
        make("Constant", [], [part + "axis"], name=part + "axis", value_ints=[1]),
        make("Unsqueeze", [part + "squares", part + "axis"], [part + "column"], name=part + "column"),
        make("Conv", [part + "column", window, k], [part + "summed"], name=part + "summed",
             kernel_shape=[size, 1, 1], pads=lrn_pads(size)),
        make("Shape", [x], [part + "shape"], name=part + "shape"),
        make("Reshape", [part + "summed", part + "shape"], [scale], name=scale),
    ]
    # onnxruntime's Pow is a scalar loop and its Log is slow: Caffe's usual beta = 0.75 as
    # sqrt(scale * sqrt(scale)) (norm2 at 144x256: 6.9 vs 14.8 ms by exp(beta*log)), and Y
    # as X / power, one pass fewer than X * scale^-beta.
    if weights[beta] == 0.75:
        nodes += [
            make("Sqrt", [scale], [part + "root"], name=part + "root"),
            make("Mul", [scale, part + "root"], [part + "cube"], name=part + "cube"),
            make("Sqrt", [part + "cube"], [power], name=power),
        ]
    else:  # scale >= k > 0
        nodes += [
            make("Log", [scale], [part + "log"], name=part + "log"),
            make("Mul", [part + "log", beta], [part + "exponent"], name=part + "exponent"),
            make("Exp", [part + "exponent"], [power], name=power),
        ]
    return nodes + [make("Div", [x, power], [y], name=y)]


EXPANSIONS = {"CaffeLRN": _expand_caffe_lrn}


def expand(nodes, weights):
    """The nodes with every composite op replaced by the standard ops that define it (weights: name -> array)."""
    out = []
    for node in nodes:
        out.extend(EXPANSIONS[node.op_type](node, weights) if node.domain == DOMAIN else [node])
    return out
