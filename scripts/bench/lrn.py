"""Caffe's LRN across channels in PyTorch, written several ways, and a timer to pick the fastest.

    y = x / (k + alpha/n * the sum of x^2 over n channels) ^ beta

over a window of (n-1)//2 channels before each channel and n//2 after (Caffe's).  The
port uses CANDIDATES[CHOSEN]; `benchmark.py --torch-lrn-candidates` reruns the timing.
"""

import statistics
import time

CHOSEN = "closed-form"

# The step's LRN inputs for the 1024x575 sample: norm1 after pool1, norm2 after conv2/3x3.
SIZES = {"norm1": (64, 144, 256), "norm2": (192, 144, 256)}


def window_pads(n):
    return (n - 1) // 2, n // 2


def band(torch, channels, n, value):
    """A (C, C, 1, 1) 1x1-convolution weight summing Caffe's channel window, times value."""
    i = torch.arange(channels)
    offset = i[None, :] - i[:, None]
    before, after = window_pads(n)
    return (((offset >= -before) & (offset <= after)) * value).float()[:, :, None, None]


def builtin(torch, n, alpha, beta, k):
    """torch.nn.functional.local_response_norm (avg_pool3d over a padded copy of the squares)."""
    if n % 2 == 0:
        raise ValueError("local_response_norm centres an even window one channel off Caffe's")
    return lambda x: torch.nn.functional.local_response_norm(x, n, alpha, beta, k)


def by_autograd(window_sum):
    """An LRN whose gradient autograd derives, from window_sum(torch, squares, n)."""

    def make(torch, n, alpha, beta, k):
        return lambda x: x * (k + (alpha / n) * window_sum(torch, x * x, n)).pow(-beta)

    return make


def shifted_sum(torch, sq, n):
    before, after = window_pads(n)
    padded = torch.nn.functional.pad(sq, (0, 0, 0, 0, before, after))
    c = sq.shape[1]
    total = padded[:, :c]
    for i in range(1, n):
        total = total + padded[:, i:i + c]
    return total


def avg_pool3d_sum(torch, sq, n):
    before, after = window_pads(n)
    padded = torch.nn.functional.pad(sq.unsqueeze(1), (0, 0, 0, 0, before, after))
    return torch.nn.functional.avg_pool3d(padded, (n, 1, 1), stride=1).squeeze(1) * n


def conv3d_sum(torch, sq, n):
    before, after = window_pads(n)
    padded = torch.nn.functional.pad(sq.unsqueeze(1), (0, 0, 0, 0, before, after))
    return torch.nn.functional.conv3d(padded, sq.new_ones(1, 1, n, 1, 1)).squeeze(1)


def banded_sum(torch, sq, n):
    return torch.nn.functional.conv2d(sq, band(torch, sq.shape[1], n, 1.0).to(sq))


def closed_form(torch, n, alpha, beta, k):
    """Caffe's own gradient, as ours (vjp.normalization.caffe_lrn_vjp): the window sums as banded 1x1
    convolutions (GEMMs), beta = 0.75 as two square roots, temporaries updated in place."""

    class CaffeLRN(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            c = x.shape[1]
            scale = torch.nn.functional.conv2d(x * x, band(torch, c, n, alpha / n).to(x), x.new_full((c,), k))
            if beta == 0.75:
                power = scale.sqrt().mul_(scale).sqrt_()
            else:
                power = scale.pow(beta)
            y = x / power
            ctx.save_for_backward(x, y, scale, power)
            return y

        @staticmethod
        def backward(ctx, dy):
            x, y, scale, power = ctx.saved_tensors
            ratio = (dy * y).div_(scale)
            # The window is its own adjoint for odd n; for even n the adjoint's pads swap.
            adjoint = band(torch, x.shape[1], n, -2 * alpha * beta / n).to(x).transpose(0, 1).contiguous()
            across = torch.nn.functional.conv2d(ratio, adjoint).mul_(x)
            return torch.addcdiv(across, dy, power)

    return CaffeLRN.apply


CANDIDATES = {
    "builtin": builtin,
    "shifted-adds": by_autograd(shifted_sum),
    "avg_pool3d": by_autograd(avg_pool3d_sum),
    "conv3d": by_autograd(conv3d_sum),
    "banded-conv": by_autograd(banded_sum),
    "closed-form": closed_form,
}


def make_lrn(torch, name, n, alpha, beta, k):
    """The nn.Module computing Caffe's LRN the way CANDIDATES[name] does."""
    fn = CANDIDATES[name](torch, n, alpha, beta, k)

    class LRN(torch.nn.Module):
        def forward(self, x):
            return fn(x)

        def extra_repr(self):
            return f"{name}, size={n}, alpha={alpha}, beta={beta}, k={k}"

    return LRN()


def reference(x, n, alpha, beta, k):
    """Caffe's LRN of a (N, C, H, W) numpy array, in float64, by its definition."""
    import numpy as np

    x = np.asarray(x, np.float64)
    before, after = window_pads(n)
    padded = np.pad(x * x, ((0, 0), (before, after), (0, 0), (0, 0)))
    total = sum(padded[:, i:i + x.shape[1]] for i in range(n))
    return x / (k + alpha / n * total) ** beta


def time_candidates(torch, repeats=5, sizes=SIZES, n=5, alpha=1e-4, beta=0.75, k=1.0):
    """{(candidate, size name, layout): median ms of forward + backward} at GoogLeNet's LRN parameters."""
    results = {}
    for size, shape in sizes.items():
        x0 = torch.rand(1, *shape) * 100  # post-ReLU activations: non-negative
        dy0 = torch.randn(1, *shape)
        for layout, fmt in (("NCHW", torch.contiguous_format), ("channels-last", torch.channels_last)):
            x, dy = x0.contiguous(memory_format=fmt), dy0.contiguous(memory_format=fmt)
            for name, make in CANDIDATES.items():
                lrn = make(torch, n, alpha, beta, k)
                times = []
                for _ in range(2 + repeats):
                    leaf = x.detach().requires_grad_()
                    t = time.perf_counter()
                    lrn(leaf).backward(dy)
                    times.append(time.perf_counter() - t)
                results[name, size, layout] = statistics.median(times[2:]) * 1e3
    return results


def print_candidates(torch, repeats):
    results = time_candidates(torch, repeats)
    columns = sorted({(size, layout) for _, size, layout in results}, key=lambda c: (c[0], c[1] != "NCHW"))
    print(f"\nLRN candidates, forward + backward, median ms of {repeats} "
          f"({', '.join(f'{s} {c}ch {w}x{h}' for s, (c, h, w) in SIZES.items())}; {torch.get_num_threads()} threads)")
    print(f"{'':14}" + "".join(f"{f'{s} {l}':>20}" for s, l in columns) + f"{'total':>9}")
    for name in CANDIDATES:
        row = [results[name, s, l] for s, l in columns]
        mark = "  <- the port's" if name == CHOSEN else ""
        print(f"{name:14}" + "".join(f"{t:20.1f}" for t in row) + f"{sum(row):9.1f}{mark}")
    totals = {name: sum(results[name, s, l] for s, l in columns) for name in CANDIDATES}
    print(f"fastest here: {min(totals, key=totals.get)} (the port uses {CHOSEN}; --torch-lrn picks another)")
    return results
