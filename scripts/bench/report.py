"""The benchmark's tables: ours per octave, PyTorch's variants beside ours, and the README's Markdown."""

from bench.inputs import DREAM_STEPS

# PyTorch's variants, in the order of their columns; a variant not timed reads n/a.
VARIANTS = {"NCHW eager": "NCHW", "channels-last eager": "ch-last", "channels-last compiled": "compiled"}


def print_results(rows, peak):
    print("\nper octave, in the order the dream runs them (size W x H; ms; each a median, then its two "
          "warm-up runs: the first runs at a new size page-fault; 'best' is the fastest timed step, "
          "measured as the sgemm peak is; 'sgemm' is the median GFLOP/s of the same matmul timed in turns "
          "with the steps, '%sgemm' the step's share of it)")
    print(f"{'size':>9} {'step':>7} {'1st/2nd':>11} {'best':>6} {'fwd':>6} {'1st/2nd':>11} {'custom':>7} {'1st/2nd':>11} "
          f"{'cust/L2':>7} {'GFLOP':>6} {'GFLOP/s':>7} {'%peak':>6} {'best':>6} {'fwd GF/s':>8} {'sgemm':>6} {'%sgemm':>6}")
    for r in rows:
        gflop = (r["flops_fwd"] + r["flops_bwd"]) / 1e9
        rate, best_rate = gflop / r["step"], gflop / r["step_best"]
        print(f"{r['size']:>9} {r['step'] * 1e3:7.0f} {warmups(r['step_warmup']):>11} {r['step_best'] * 1e3:6.0f} "
              f"{r['fwd'] * 1e3:6.0f} {warmups(r['fwd_warmup']):>11} {r['custom'] * 1e3:7.0f} "
              f"{warmups(r['custom_warmup']):>11} {r['custom'] / r['step']:7.2f} {gflop:6.1f} {rate:7.1f} "
              f"{100 * rate / peak:5.1f}% {100 * best_rate / peak:5.1f}% {r['flops_fwd'] / 1e9 / r['fwd']:8.1f} "
              f"{r['sgemm_gflops']:6.1f} {100 * rate / r['sgemm_gflops']:5.1f}%")
    steady = sum(r["step"] for r in rows) * DREAM_STEPS
    print(f"{DREAM_STEPS} steps per octave at these medians: {steady:.1f} s, the dream's steady-state compute")


def warmups(times):
    return "/".join(f"{t * 1e3:.0f}" for t in times)


def fastest(torch_times, kind):
    """(variant, seconds) of the fastest PyTorch variant at `kind` ("step" or "fwd"), of those timed."""
    timed = {v: t[kind] for v, t in torch_times.items() if t.get(kind) is not None}
    variant = min(timed, key=timed.get)
    return variant, timed[variant]


def _ms(times, variant, kind, width):
    t = times.get(variant, {}).get(kind)
    return f"{t * 1e3:{width}.1f}" if t is not None else f"{'n/a' if variant not in times else '–':>{width}}"


def print_torch_results(rows):
    print("\nPyTorch, same sizes (ms, medians; compiled: its step only, after its compile); ours/torch is "
          "over the fastest variant (named), > 1 means onnxruntime is slower")
    print(f"{'size':>9}" + "".join(f"{f'{short} step':>14}" for short in VARIANTS.values())
          + "".join(f"{f'{short} fwd':>13}" for short in VARIANTS.values())
          + f"  {'fastest step':<24}{'ours/torch step':>15}  {'fastest fwd':<24}{'ours/torch fwd':>14}")
    for r in rows:
        t = r["torch"]
        (step_v, step), (fwd_v, fwd) = fastest(t, "step"), fastest(t, "fwd")
        print(f"{r['size']:>9}" + "".join(_ms(t, v, "step", 14) for v in VARIANTS)
              + "".join(_ms(t, v, "fwd", 13) for v in VARIANTS)
              + f"  {step_v:<24}{r['step'] / step:15.2f}  {fwd_v:<24}{r['fwd'] / fwd:14.2f}")


def print_markdown(rows, peak):
    print("\n| size | step ms | best ms | fwd ms | custom/L2 | GFLOP | GFLOP/s | % sgemm peak | best | "
          "% sgemm in turns | torch step ms | torch variant | ratio |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|")
    for r in rows:
        gflop = (r["flops_fwd"] + r["flops_bwd"]) / 1e9
        rate, best_rate = gflop / r["step"], gflop / r["step_best"]
        variant, torch_step = fastest(r["torch"], "step") if "torch" in r else ("–", None)
        torch_ms = f"{torch_step * 1e3:.0f}" if torch_step else "–"
        ratio = f"{r['step'] / torch_step:.2f}" if torch_step else "–"
        print(f"| {r['size']} | {r['step'] * 1e3:.0f} | {r['step_best'] * 1e3:.0f} | {r['fwd'] * 1e3:.0f} | "
              f"{r['custom'] / r['step']:.2f} | {gflop:.1f} | {rate:.1f} | {100 * rate / peak:.0f}% | "
              f"{100 * best_rate / peak:.0f}% | {100 * rate / r['sgemm_gflops']:.0f}% | {torch_ms} | {variant} | {ratio} |")
