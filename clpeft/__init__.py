"""clpeft: continual learning with parameter-efficient tuning on stock timm models.

streams → models (backbone + PET) → strategies → evaluation → reports. Import the submodules
you need; nothing heavy happens at import time of this package.
"""
__version__ = "0.1.0"
