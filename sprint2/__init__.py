"""sprint2: Pascal VOC object detection, loaded in parallel, trained under tf.distribute, quantized.

Importing the package is cheap on purpose: TensorFlow is imported only by the modules that
train or run models (model, distribute, training, evaluate, quantize).
"""

import os

# TensorFlow's C++ start-up chatter (oneDNN notes, CUDA probing on CPU-only machines) would otherwise
# fill every notebook's output; errors still show. A value the user set wins.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"
