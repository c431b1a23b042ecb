"""sprint2: Pascal VOC object detection, loaded in parallel, trained under tf.distribute, quantized.

Importing the package is cheap on purpose: TensorFlow is imported only by the modules that
train or run models (model, distribute, training, evaluate, quantize).
"""

__version__ = "0.1.0"
