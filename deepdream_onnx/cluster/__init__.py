"""Dreams on a Ray cluster: `--ray ADDRESS` on dream (a batch), gallery and census.

connect joins a running cluster (checked for an answer first: Ray's own connect waits
for minutes on a wrong address), model packs the model directory into Ray's object
store and unpacks it on each worker's node (no shared disk), pool keeps actors that
load the net once and run the recipe's own functions, jobs splits a command's work
over them.  Results equal the local run's: each image is dreamed by the same function
with the same seed as in one process.

Nothing outside this package imports it except behind --ray, and it imports Ray only
inside its functions, so the local path never loads Ray.
"""

from deepdream_onnx.errors import DeepDreamError

INSTALL = "pip install deepdream-onnx[cluster]"


class ClusterError(DeepDreamError):
    """The Ray cluster cannot be used: Ray missing, the cluster unreachable, its workers lost."""
