"""Audio data: decoding, the AudioFolder TFDS builder and the grain input pipeline (pipeline.py)."""

import os

# 300 FSDD clips installed with the package (README.md there: license, attribution, selection).
FSDD_SAMPLE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "samples", "fsdd")
