"""Models: stock timm backbones, an input adapter, and a head that grows per experience."""
from clpeft.models.backbones import BACKBONES, BackboneSpec, create_backbone, register_backbone
from clpeft.models.continual_model import ContinualModel, InputAdapter, build_model
from clpeft.models.heads import IncrementalHead

__all__ = ["BACKBONES", "BackboneSpec", "register_backbone", "create_backbone", "ContinualModel", "InputAdapter", "build_model", "IncrementalHead"]
