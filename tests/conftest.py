"""Test-wide settings: the protocol's forward passes stay eager unless a test compiles them
(`tests/evaluation/test_engine.py`), so that each tiny model is not compiled again."""

import os

os.environ.setdefault("FDCAM_COMPILE", "0")
