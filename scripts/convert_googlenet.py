"""Convert the BVLC GoogLeNet into this repository's models/bvlc_googlenet/.

    python scripts/convert_googlenet.py [--caffemodel PATH] [--prototxt PATH] [-o DIR]

A thin wrapper around `deepdream-onnx convert` whose only difference is the default
output directory; without --caffemodel the weights are downloaded (and cached).
"""

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

if __name__ == "__main__":
    # Lets the script run from a checkout that was never pip-installed.
    sys.path.insert(0, str(REPO))
    from deepdream_onnx.cli.main import main

    # A later -o in argv overrides this default (argparse keeps the last value).
    sys.exit(main(["convert", "-o", str(REPO / "models" / "bvlc_googlenet"), *sys.argv[1:]]))
