"""The pieces of scripts/benchmark.py: inputs, timing, sgemm peaks, the machine, fresh
processes, the PyTorch peer (torch_port, lrn, torch_check) and the report."""
