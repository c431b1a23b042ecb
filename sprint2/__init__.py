"""sprint2: Pascal VOC object detection, loaded in parallel, trained under tf.distribute, quantized.

Importing the package is cheap on purpose: TensorFlow is imported only by the modules that
train or run models (model, distribute, training, evaluate, quantize).
"""

import os

# Keep TensorFlow's C++ info and warning logs out of notebook outputs; errors still show. A value the
# user set wins. The start-up lines no level hides are filtered in Jupyter kernels by sprint2.quiet.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"
