"""PET modules injected into stock models by target name: Adapter, LoRA, Prefix, Prompt, supermasks."""
from clpeft.pet.config import (PET_TYPES, AdapterConfig, LoRAConfig, PETConfig, PrefixConfig, PromptConfig,
                               SupermaskConfig)
from clpeft.pet.inject import PETController, inject_named_pet, inject_pet
from clpeft.pet.layers import PETLayer

__all__ = ["PET_TYPES", "AdapterConfig", "LoRAConfig", "PETConfig", "PrefixConfig", "PromptConfig", "SupermaskConfig",
           "PETController", "PETLayer", "inject_named_pet", "inject_pet"]
