"""CODA-Prompt (Smith et al., CVPR 2023): in each prompted block, the prompt is a weighted sum of prompt
components, the weights computed from the query by attention-weighted cosine similarity.

- **Components**: ``pool_size`` per block, ``pool_size / n_experiences`` new ones per experience. Each
  component m has a prompt P_m (``length`` tokens, half keys and half values), a key K_m and an attention
  vector A_m; α[b, m] = cos(q_b ⊙ A_m, K_m) (not normalised, may be negative) and sample b's prompt is
  Σ_m α[b, m] · P_m over the components seen so far — one batched forward.
- **Per experience**: before experience t > 0 the new components' P, K and A are drawn orthonormal to every
  earlier one (Gram–Schmidt, per block); during it only they train, earlier components are frozen (their keys
  and attention vectors take no gradient), later ones are absent.
- **Loss**: cross-entropy over the current experience's classes, plus ``ortho_mu`` · mean((T Tᵀ − I)²) over
  K, A and the flattened P of the components in use (0 by default, as shipped: the orthogonal
  initialisation makes it unnecessary).

Defaults are the code's CIFAR-100 settings (100 components of length 8 in blocks 0-4). The Gram–Schmidt draws
come from a generator seeded by the run's seed, so runs and resumes are reproducible.
"""
from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass

import torch

from clpeft.errors import ClpeftError
from clpeft.evaluation.prediction import Prediction
from clpeft.pet.pool import PromptPool
from clpeft.strategies.base import CLStrategy, register
from clpeft.utils.typed import option


def ortho_penalty(t: torch.Tensor) -> torch.Tensor:
    t = t.reshape(t.shape[0], -1).float()
    return ((t @ t.T - torch.eye(t.shape[0], device=t.device)) ** 2).mean()


@register("coda_prompt")
class CodaPrompt(CLStrategy):
    accepts_pet = False  # the method owns its prompt components
    loss_scope = "current"
    keeps = ("draws",)  # the generator of later experiences' new components

    @dataclass
    class Options:
        pool_size: int = option(100, "prompt components per block, split evenly over the experiences", ge=1)
        length: int = option(8, "tokens per component, half keys and half values (even)", ge=2)
        blocks: list[int] = option(default_factory=lambda: [0, 1, 2, 3, 4], doc="blocks with prompts")
        ortho_mu: float = option(0.0, "weight of the orthogonality penalty", ge=0.0)

    @classmethod
    def check_run(cls, options, settings, experience_sizes) -> list[int]:
        skipped = super().check_run(options, settings, experience_sizes)
        if experience_sizes:
            cls.components_per_experience(options, len(experience_sizes))
        return skipped

    @staticmethod
    def components_per_experience(options, n: int) -> int:
        if options.pool_size % n:
            raise ClpeftError(f"coda_prompt splits options.pool_size={options.pool_size} components evenly over {n} "
                              f"experiences; give a multiple of {n}, e.g. --option pool_size={-(-options.pool_size // n) * n}")
        return options.pool_size // n

    def setup(self):
        o = self.options
        self.per_experience = self.components_per_experience(o, self.n_experiences or 1)
        dim = self.model.backbone.num_features
        self.pools = [PromptPool(self.model.backbone, o.pool_size, o.length, [b], dim, attention=True) for b in o.blocks]
        for block, pool in zip(o.blocks, self.pools):
            self.model.extras[f"coda_b{block}"] = pool
        # its own stream, older than seeded_generator's formula: kept so that the committed CODA-P numbers reproduce
        self.draws = torch.Generator().manual_seed(self.seed * 7919 + 17)
        self._orthogonalise(0)

    def _span(self, t: int) -> tuple[int, int]:
        return t * self.per_experience, (t + 1) * self.per_experience

    def _orthogonalise(self, t: int) -> None:
        start, stop = self._span(t)
        for pool in self.pools:
            pool.gram_schmidt(start, stop, self.draws)

    def before_experience(self):
        if self.experience_index > 0:
            self._orthogonalise(self.experience_index)

    def trainable_parameters(self):
        start, stop = self._span(max(self.experience_index, 0))
        params = [p for pool in self.pools for p in pool.parameters_of(start, stop)]
        return params + list(self.model.head.parameters())

    def _alphas(self, q: torch.Tensor, training: bool) -> list[torch.Tensor]:
        start, stop = self._span(self.experience_index)
        return [pool.similarity(q, upto=stop, frozen_before=start if training else 0) for pool in self.pools]

    def _forward(self, x: torch.Tensor, alphas: list[torch.Tensor]):
        with ExitStack() as stack:
            for pool, alpha in zip(self.pools, alphas):
                stack.enter_context(pool.weighted(alpha))
            with self.autocast():
                features = self.model.features(x)
                return features, self.model.head(features)

    def training_logits(self, x):
        return self._forward(x, self._alphas(self.frozen_features(x), training=True))[1]

    def training_loss(self, logits, y, x):
        loss = super().training_loss(logits, y, x)
        if self.options.ortho_mu > 0:
            stop = self._span(self.experience_index)[1]
            for pool in self.pools:
                prompts = torch.stack([torch.cat([p.reshape(-1) for p in pool.pet.parameters(n)])
                                       for n in pool.names[:stop]])
                loss = loss + self.options.ortho_mu * (ortho_penalty(pool.keys[:stop]) + ortho_penalty(pool.attention[:stop])
                                                       + ortho_penalty(prompts))
        return loss

    def predict(self, x: torch.Tensor) -> Prediction:
        features, logits = self._forward(x, self._alphas(self.frozen_features(x), training=False))
        return Prediction(logits=logits, features=features)
