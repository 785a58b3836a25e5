"""The fuzz corpus, tests/fuzz_corpus: the fuzzer's seeds and every input that once crashed a reader.

Each file goes through read_caffemodel, read_prototxt, read_onnx and convert() (a prototxt also as
the deploy net of the corpus's tiny caffemodel), judged by scripts/fuzz_readers.py's run_case: it
must succeed or raise a DeepDreamError of one line (naming the file, for a reader), and a failed
convert() leaves nothing in the output's folder.  The seeds must also pass their own reader and
convert(), so that the fuzzer starts from valid models.

A reproducer is kept once its cause is fixed, named after that cause.
"""

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "tests" / "fuzz_corpus"
FILES = sorted(p for p in CORPUS.iterdir() if p.is_file())


@pytest.fixture(scope="module")
def fuzz():
    """scripts/fuzz_readers.py loaded as a module."""
    spec = importlib.util.spec_from_file_location("fuzz_readers", ROOT / "scripts" / "fuzz_readers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_corpus_file(fuzz, path, tmp_path):
    for target, data, prototxt in fuzz.replay_jobs(path):
        outcome = fuzz.run_case(target, data, tmp_path, prototxt)
        assert outcome.status in ("ok", "error"), \
            f"{target}{' with it as the prototxt' if prototxt else ''}: {outcome.kind}: {outcome.message}\n{outcome.trace}"
        kind = fuzz.kind_of(path.name, path.read_bytes())
        if path.name.startswith("seed-") and (target == kind or target == "convert" and
                                               (prototxt is not None or kind != "prototxt")):
            assert outcome.status == "ok", f"seed {path.name} through {target}: {outcome.message}"


def test_corpus_is_small():
    sizes = {p.name: p.stat().st_size for p in FILES}
    assert sum(sizes.values()) < 1 << 20 and max(sizes.values()) < 64 << 10, sizes
    kinds = {p.suffix for p in FILES}
    assert {".caffe", ".prototxt", ".onnx"} <= kinds and ".caffemodel" not in kinds  # .gitignore leaves .caffemodel out
