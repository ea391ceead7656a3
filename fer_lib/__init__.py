"""fer_lib: the library behind fer-study, a reproducible study of facial expression recognition on FER2013.

One module per stage: data -> augment -> models -> train -> evaluate -> plots / widgets.
"""

from fer_lib.core.labels import EMOTIONS, NUM_CLASSES

__version__ = "0.1.0"
__all__ = ["EMOTIONS", "NUM_CLASSES", "__version__"]
