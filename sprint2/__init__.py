"""sprint2: Pascal VOC object detection, loaded in parallel, trained under tf.distribute, quantized.

Importing the package is cheap on purpose: TensorFlow is imported only by the modules that
train or run models (model, distribute, training, evaluate, quantize).
"""

import importlib.metadata
import os

# Keep TensorFlow's C++ info and warning logs out of notebook outputs; errors still show. A value the
# user set wins. The start-up lines no level hides are filtered in Jupyter kernels by sprint2.quiet.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"


def installed_version(distribution: str) -> str | None:
    """The installed version of a distribution (a pip name such as "ai-edge-litert"), None when absent."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None
