"""DualPrompt (Wang et al., ECCV 2022), as CODA-Prompt's code runs it: a shared G(eneral)-prompt in the
first blocks and one E(xpert)-prompt per experience in the next ones, chosen per sample by key similarity.

- **G-prompt**: one prefix (``g_length`` tokens, half keys and half values) in each of ``g_blocks``, always on.
- **E-prompts**: in each of ``e_blocks`` a pool of ``pool_size`` prefixes with its own keys. Training uses
  the experience's own E-prompt (the task id, by design of the method) and pulls its key towards the
  queries: ``pull_weight`` · Σ_b (1 − cos(q_b, key_t)) per block. At test time each block takes each sample's
  most similar key's prompt: no task id reaches ``predict``, and a sample's prediction never depends on the
  rest of its batch.
- The prefixes are laid out per head as prefix tuning requires (keys and values of each sample its own;
  the reshape-for-permute mix-up of several DualPrompt ports cannot happen: a test runs each sample alone).

Defaults are CODA-Prompt's CIFAR-100 settings: one E-prompt per experience (10 there), E length 20 in blocks 2-4,
G length 6 in blocks 0-1, prompts and keys from U[0, 1). The routed E-prompt of the first E block is
recorded as the task inferred (the task-inference column of the report).
"""
from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass

import torch

from clpeft.errors import ClpeftError
from clpeft.evaluation.prediction import Prediction
from clpeft.pet.pool import PromptPool, check_prompt_per_experience, check_uniform_init
from clpeft.strategies.base import CLStrategy, register
from clpeft.utils.typed import option


@register("dualprompt")
class DualPrompt(CLStrategy):
    accepts_pet = False  # the method owns its prompts
    loss_scope = "current"

    @dataclass
    class Options:
        pool_size: int | None = option(None, "E-prompts per block (null: one per experience, the method's pool; "
                                             "more leaves untrained keys competing at test time)", ge=1)
        e_length: int = option(20, "tokens per E-prompt, half keys and half values (even)", ge=2)
        g_length: int = option(6, "tokens of the G-prompt, half keys and half values (even; 0: none)", ge=0)
        e_blocks: list[int] = option(default_factory=lambda: [2, 3, 4], doc="blocks with E-prompts (at least one)")
        g_blocks: list[int] = option(default_factory=lambda: [0, 1], doc="blocks with the G-prompt")
        pull_weight: float = option(1.0, "weight of the key pull loss", ge=0.0)
        init_low: float = option(0.0, "prompts and keys ~ U(init_low, init_high)")
        init_high: float = option(1.0, "prompts and keys ~ U(init_low, init_high)")

    @classmethod
    def check_config(cls, options, settings) -> None:
        check_uniform_init("dualprompt", options.init_low, options.init_high)
        if not options.e_blocks:
            raise ClpeftError("dualprompt needs at least one block with E-prompts (options.e_blocks: [] would train "
                              "no expert prompt and infer no task); e.g. options.e_blocks: [2, 3, 4]")

    @classmethod
    def check_run(cls, options, settings, experience_sizes) -> list[int]:
        skipped = super().check_run(options, settings, experience_sizes)
        check_prompt_per_experience("dualprompt", options.pool_size, experience_sizes)
        return skipped

    def pool_size(self) -> int:
        if self.options.pool_size is None and self.n_experiences is None:
            raise ClpeftError("dualprompt sizes its E-prompt pool by the stream's length, which is unknown here: "
                              "set options.pool_size")
        return self.options.pool_size or self.n_experiences

    def setup(self):
        o = self.options
        net, init = self.model.backbone, (o.init_low, o.init_high)
        dim = net.num_features
        self.general = (PromptPool(net, 1, o.g_length, o.g_blocks, dim, init=init, keys=False)
                        if o.g_length and o.g_blocks else None)
        self.experts = [PromptPool(net, self.pool_size(), o.e_length, [b], dim, init=init) for b in o.e_blocks]
        if self.general is not None:
            self.model.extras["dualprompt_general"] = self.general
            self.general.pet.activate("p0")
        for block, pool in zip(o.e_blocks, self.experts):
            self.model.extras[f"dualprompt_e{block}"] = pool

    def trainable_parameters(self):
        pools = ([self.general] if self.general is not None else []) + self.experts
        return [p for pool in pools for p in pool.parameters_of()] + list(self.model.head.parameters())

    def before_experience(self):
        if self.experience_index >= self.pool_size():
            raise ClpeftError(f"dualprompt has {self.pool_size()} E-prompts; experience {self.experience_index} "
                              "needs one more (raise options.pool_size)")

    def training_logits(self, x):
        q = self.frozen_features(x)
        t = self.experience_index
        self._pull = sum((1.0 - pool.similarity(q)[:, t]).sum() for pool in self.experts)
        index = torch.full((x.shape[0], 1), t, dtype=torch.long, device=x.device)
        with ExitStack() as stack:
            for pool in self.experts:
                stack.enter_context(pool.concatenated(index))
            with self.autocast():
                return self.model(x)

    def training_loss(self, logits, y, x):
        return super().training_loss(logits, y, x) + self.options.pull_weight * self._pull

    def predict(self, x: torch.Tensor) -> Prediction:
        q = self.frozen_features(x)
        chosen = [pool.top_k(q, 1)[0] for pool in self.experts]
        with ExitStack() as stack:
            for pool, index in zip(self.experts, chosen):
                stack.enter_context(pool.concatenated(index))
            with self.autocast():
                features = self.model.features(x)
                logits = self.model.head(features)
        return Prediction(logits=logits, features=features, task=chosen[0][:, 0] if chosen else None)
