"""PET modules injected into stock models by target name: Adapter, LoRA, Prefix, Prompt, supermasks.

One module per kind (config + layer + placement table), registered in :mod:`clpeft.pet.config`.
"""
from clpeft.pet import adapter, lora, prefix, prompt, supermask  # noqa: F401 - registers the kinds
from clpeft.pet.adapter import AdapterConfig
from clpeft.pet.config import PET_KINDS, PET_TYPES, PETConfig, PETKind, get_pet_kind, pet_config, register_pet
from clpeft.pet.inject import PETController, inject_named_pet, inject_pet
from clpeft.pet.layers import PETLayer
from clpeft.pet.lora import LoRAConfig
from clpeft.pet.prefix import PrefixConfig
from clpeft.pet.prompt import PromptConfig
from clpeft.pet.supermask import SupermaskConfig

__all__ = ["PET_KINDS", "PET_TYPES", "AdapterConfig", "LoRAConfig", "PETConfig", "PETKind", "PrefixConfig",
           "PromptConfig", "SupermaskConfig", "PETController", "PETLayer", "get_pet_kind", "inject_named_pet",
           "inject_pet", "pet_config", "register_pet"]
