"""FD-CAM: faithful and discriminative class activation maps (Li et al., ICPR 2022)."""

from fdcam.cam import FDCAM, FDCAMExplanation
from fdcam.errors import FdcamError
from fdcam.explanation import Explainer, Explanation

__all__ = ["FDCAM", "Explainer", "Explanation", "FDCAMExplanation", "FdcamError"]
__version__ = "0.1.0"
