"""`python -m deepdream_onnx` runs the command line."""

import sys

from deepdream_onnx.cli.main import main

sys.exit(main())
