"""L2P (Wang et al., CVPR 2022), as CODA-Prompt's code runs it ("L2P++"): a pool of prefix prompts chosen
per sample by key similarity, on a frozen ViT.

- **Query**: the frozen backbone's class token (every prompt off), one extra forward without gradient.
- **Selection**: cosine of the query with the pool's keys; each sample takes its ``top_k`` prompts, whose
  tokens go side by side into the prefix of the chosen blocks (k·L/2 key and k·L/2 value tokens).
- **Training**: the prompts, keys and heads, with the cross-entropy over the current experience's classes
  plus ``pull_weight`` · Σ (1 − cos(query, chosen key)). No task id is used, ever.

Defaults are CODA-Prompt's CIFAR-100 L2P++ settings: pool 30, length 20 (10 key + 10 value tokens), top 5,
block 0 (``blocks: [0, 1, 2, 3, 4]`` is its "deep" variant), prompts and keys from U[0, 1). On purpose unlike
that code: each sample's pull goes to its own chosen keys (``pull: batch`` is the code's behaviour, which
pulls every query towards every sample's keys). The batch-wise prompt voting of the original L2P code is
``batch_vote: true``, off by default: at test time it reads a batch's composition.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from clpeft.errors import ClpeftError
from clpeft.evaluation.prediction import Prediction
from clpeft.pet.pool import PromptPool, check_uniform_init
from clpeft.strategies.base import CLStrategy, register
from clpeft.utils.typed import option


@register("l2p")
class L2P(CLStrategy):
    accepts_pet = False  # the method owns its prompt pool
    loss_scope = "current"
    keeps = ("choices",)

    @dataclass
    class Options:
        pool_size: int = option(30, "prompts in the pool", ge=1)
        length: int = option(20, "tokens per prompt, half keys and half values (even)", ge=2)
        top_k: int = option(5, "prompts each sample takes", ge=1)
        blocks: list[int] = option(default_factory=lambda: [0], doc="blocks whose attention gets the prompts")
        pull_weight: float = option(1.0, "weight λ of the key pull loss", ge=0.0)
        pull: str = option("own", "each query pulls its own chosen keys, or every chosen key of the batch "
                                  "(the CODA-Prompt code)", choices=("own", "batch"))
        batch_vote: bool = option(False, "use the batch's most chosen prompts for every sample (reads the batch)")
        init_low: float = option(0.0, "prompts and keys ~ U(init_low, init_high)")
        init_high: float = option(1.0, "prompts and keys ~ U(init_low, init_high)")

    @classmethod
    def check_config(cls, options, settings) -> None:
        check_uniform_init("l2p", options.init_low, options.init_high)
        if options.top_k > options.pool_size:
            raise ClpeftError(f"l2p takes top_k={options.top_k} prompts from a pool of {options.pool_size}; "
                              f"lower top_k or grow pool_size, e.g. --option top_k={options.pool_size}")

    def setup(self):
        o = self.options
        dim = self.model.backbone.num_features
        self.pool = PromptPool(self.model.backbone, o.pool_size, o.length, o.blocks, dim,
                               init=(o.init_low, o.init_high))
        self.model.extras["l2p_pool"] = self.pool
        self.choices = torch.zeros(o.pool_size, dtype=torch.long)  # how often each prompt was chosen (test)

    def trainable_parameters(self):
        return self.pool.parameters_of() + list(self.model.head.parameters())

    def _select(self, x: torch.Tensor):
        return self.pool.top_k(self.frozen_features(x), self.options.top_k, batch_vote=self.options.batch_vote)

    def training_logits(self, x):
        index, sim = self._select(x)
        if self.options.pull == "own":
            self._pull = (1.0 - sim.gather(1, index)).sum()
        else:  # CODA-Prompt's code: sim[:, index] is [B, B, k]
            self._pull = (1.0 - sim[:, index]).sum()
        with self.pool.concatenated(index), self.autocast():
            return self.model(x)

    def training_loss(self, logits, y, x):
        return super().training_loss(logits, y, x) + self.options.pull_weight * self._pull

    def predict(self, x: torch.Tensor) -> Prediction:
        index, _ = self._select(x)
        self.choices += torch.bincount(index.flatten().cpu(), minlength=self.options.pool_size)
        with self.pool.concatenated(index), self.autocast():
            features = self.model.features(x)
            return Prediction(logits=self.model.head(features), features=features)

    def summary(self) -> dict:
        """How often each prompt was chosen over every evaluation (a collapsed selection shows here)."""
        return {"prompt_choices": self.choices.tolist()}
