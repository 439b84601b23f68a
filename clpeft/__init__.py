"""clpeft: continual learning with parameter-efficient tuning on stock timm models.

streams → models (backbone + PET) → strategies → evaluation → reports. Import the submodules
you need; nothing heavy happens at import time of this package. The one thing it does: silence the
warning Avalanche's optional dependency qpsolvers prints at every start (clpeft uses no QP solver).
"""
import warnings

warnings.filterwarnings("ignore", message="no QP solver found", category=UserWarning)

__version__ = "0.1.0"
