"""WavLeJEPA."""

import os

# TensorFlow (imported by tfds and clu) prints INFO banners at import unless told otherwise; a
# user's own setting wins.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
