"""FD-CAM: faithful and discriminative class activation maps (Li et al., ICPR 2022)."""

from fdcam.errors import FdcamError
from fdcam.explanation import Explanation

__all__ = ["Explanation", "FdcamError"]
__version__ = "0.1.0"
