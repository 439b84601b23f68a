"""LAE's mechanics on a tiny stream: birth and EMA of the offline PET, the ensemble rule, frozen old heads."""
import pytest
import torch
import torch.nn.functional as F
from avalanche.core import SupervisedPlugin

from clpeft.config import resolve
from clpeft.errors import ClpeftError
from clpeft.models.heads import IncrementalHead, align_new_class_norms
from clpeft.pet import inject_named_pet
from clpeft.pet.trunk import SharedTrunk
from clpeft.run import build, run
from clpeft.strategies.lae import OFFLINE


def lae_config(fast_scenario, pet="adapter", epochs=1, **options):
    """Tiny LAE runs; ``epochs=2`` with a 1-epoch warm-up where the warm-up itself is under test."""
    fast_scenario["train"].update(epochs=epochs, batch_size=32)
    options = {"ema_decay": 0.9, "pet_warmup_epochs": epochs - 1, **options}
    fast_scenario["strategies"] = {"lae": {"options": options}}
    return resolve(fast_scenario, strategy="lae", pet=pet)


def snapshot(pet, name):
    return {k: v.detach().clone() for k, v in pet.named_parameters(name).items()}


class Recorder(SupervisedPlugin):
    """Watches the PET instances and the heads around every step of experience 1 (an Avalanche plugin runs
    after the strategy's own hook of the same moment)."""

    def __init__(self, pet, model):
        super().__init__()
        self.pet, self.model = pet, model
        self.at_birth = None
        self.steps = []           # (online after step, offline before EMA, offline after EMA)
        self.old_head_grads = []
        self.frozen_epoch_pet_grads = []

    def before_training_exp(self, strategy, **kw):
        if OFFLINE in self.pet.names and self.at_birth is None:
            self.at_birth = (snapshot(self.pet, "default"), snapshot(self.pet, OFFLINE))

    def after_backward(self, strategy, **kw):
        if OFFLINE in self.pet.names:
            self.old_head_grads.append(self.model.head.chunks[0].weight.grad)
            if strategy.epoch < 1:
                self.frozen_epoch_pet_grads += [p.grad for p in self.pet.parameters("default")]

    def before_update(self, strategy, **kw):
        if OFFLINE in self.pet.names:  # the optimizer step never touches the offline PET
            self._offline_before = snapshot(self.pet, OFFLINE)

    def after_update(self, strategy, **kw):
        if OFFLINE in self.pet.names:
            self.steps.append((snapshot(self.pet, "default"), self._offline_before, snapshot(self.pet, OFFLINE)))


def test_offline_pet_is_born_as_the_online_copy_then_follows_the_ema_rule_exactly(fast_scenario):
    stream, model, pet, strategy, _ = build(lae_config(fast_scenario, epochs=2))
    recorder = Recorder(pet, model)
    strategy.plugins.append(recorder)
    strategy.train(stream.train_stream[0])
    assert OFFLINE not in pet.names  # nothing to accumulate during experience 0
    online_end_of_0 = snapshot(pet, "default")
    strategy.train(stream.train_stream[1])

    born_online, born_offline = recorder.at_birth
    for k in online_end_of_0:
        assert torch.equal(born_offline[k], online_end_of_0[k]) and torch.equal(born_online[k], online_end_of_0[k])
    steps_per_epoch = -(-len(stream.train_stream[1].dataset) // 32)
    assert len(recorder.steps) == 2 * steps_per_epoch  # an EMA step after every optimizer step
    d = 0.9
    for online, off_before, off_after in recorder.steps:
        for k in online:
            assert torch.equal(off_after[k], off_before[k].clone().mul_(d).add_(online[k], alpha=1 - d))
            assert torch.allclose(off_after[k], d * off_before[k] + (1 - d) * online[k], rtol=1e-6, atol=1e-8)
    # the offline PET is never trained directly
    assert all(not p.requires_grad for p in pet.parameters(OFFLINE))


def test_old_heads_get_zero_gradient_and_the_pet_sits_out_the_warmup(fast_scenario):
    stream, model, pet, strategy, _ = build(lae_config(fast_scenario, epochs=2))
    recorder = Recorder(pet, model)
    strategy.plugins.append(recorder)
    strategy.train(stream.train_stream[0])
    old_head = model.head.chunks[0].weight.detach().clone()
    strategy.train(stream.train_stream[1])
    assert recorder.old_head_grads and all(g is None or not g.any() for g in recorder.old_head_grads)
    assert torch.equal(model.head.chunks[0].weight, old_head)
    assert recorder.frozen_epoch_pet_grads and all(g is None for g in recorder.frozen_epoch_pet_grads)


def test_ensemble_is_the_per_class_max_of_the_two_softmaxes(fast_scenario):
    stream, model, pet, strategy, _ = build(lae_config(fast_scenario, pet="lora", ema_decay=0.5))
    for exp in list(stream.train_stream)[:2]:
        strategy.train(exp)
    model.eval()
    x = next(stream.eval_batches(64, seed=0))[0]
    with torch.no_grad():
        with pet.using("default"):
            p_on = F.softmax(model(x), dim=-1)
        with pet.using(OFFLINE):
            p_off = F.softmax(model(x), dim=-1)
        out = strategy.predict(x)
    expected = torch.maximum(p_on, p_off)
    assert not torch.allclose(p_on, p_off, atol=1e-4)  # the experts really differ
    assert torch.allclose(out.logits.exp(), expected, atol=1e-6)
    assert torch.equal(out.logits.argmax(1), expected.argmax(1))
    assert torch.allclose(F.softmax(out.views["online"], -1), p_on, atol=1e-6)


def test_shared_trunk_splits_a_vit_exactly():
    from clpeft.models.backbones import create_backbone

    net, _ = create_backbone("vit_tiny_fmnist_scratch", pretrained=False)
    pet = inject_named_pet(net, "adapter", {"blocks": [2, 3]})
    with torch.no_grad():
        for p in pet.parameters():
            p.normal_(0, 0.1)
    split = SharedTrunk(net, pet)
    assert split.first_block == 2
    net.eval()
    x = torch.rand(3, 1, 28, 28)
    with torch.no_grad():
        assert torch.allclose(split.branch(split.trunk(x)), net(x), atol=1e-6)
        with pet.using(None):  # the trunk holds no PET: switching instances cannot change it
            assert torch.equal(split.trunk(x), SharedTrunk(net, pet).trunk(x))


def test_per_experience_decay_and_head_alignment_options(fast_scenario):
    stream, model, pet, strategy, _ = build(lae_config(fast_scenario, ema_per_experience=0.5, align_heads=True))
    strategy.train(stream.train_stream[0])
    strategy.train(stream.train_stream[1])
    steps = -(-len(stream.train_stream[1].dataset) // 32)
    assert strategy.decay == pytest.approx(0.5 ** (1 / steps), rel=1e-12)
    norms = [c.weight.norm(dim=1) for c in model.head.chunks]
    assert float(norms[1].mean()) == pytest.approx(float(norms[0].mean()), rel=1e-5)
    assert len(strategy.gammas) == 1


def test_align_new_class_norms_matches_the_old_mean_norm():
    head = IncrementalHead(4, 10)
    head.grow(3)
    head.grow(2)
    head.grow(2)
    with torch.no_grad():
        head.chunks[1].weight.mul_(5.0)
        head.chunks[2].weight.mul_(3.0)
    old_mean = float(head.chunks[0].weight.norm(dim=1).mean())
    bias = head.chunks[2].bias.detach().clone()
    gamma = align_new_class_norms(head, n_old=3)
    new = torch.cat([head.chunks[1].weight, head.chunks[2].weight]).norm(dim=1)
    assert float(new.mean()) == pytest.approx(old_mean, rel=1e-6) and gamma < 1
    assert torch.equal(head.chunks[2].bias, bias)


def test_lae_needs_a_pet_and_rejects_bad_settings_when_configured(fast_scenario):
    with pytest.raises(ClpeftError, match="needs a PET"):
        resolve(fast_scenario, strategy="lae")
    with pytest.raises(ClpeftError, match="ema_decay must be < 1"):
        lae_config(fast_scenario, ema_decay=1.5)
    with pytest.raises(ClpeftError, match="works with --pet adapter .* not supermask"):
        lae_config(fast_scenario, pet="supermask")


@pytest.mark.parametrize("epochs,warmup", [(1, None), (2, 2), (5, 5)])
def test_lae_whose_warmup_takes_every_epoch_is_refused(fast_scenario, epochs, warmup):
    """With the head-only warm-up taking every epoch the PET never trains after experience 0: refused."""
    fast_scenario["train"]["epochs"] = epochs
    fast_scenario["strategies"] = {"lae": {"options": {"pet_warmup_epochs": warmup}}}
    with pytest.raises(ClpeftError, match="never trains the PET after experience 0"):
        resolve(fast_scenario, strategy="lae", pet="adapter")


def test_lae_run_records_each_expert(fast_scenario):
    results = run(lae_config(fast_scenario, pet="prompt"))
    assert set(results["views"]) == {"online", "offline"}
    T = len(results["accuracy_matrix"])
    for view in results["views"].values():
        assert len(view["accuracy_matrix"]) == T
    # experience 0 has one expert: every view agrees with the ensemble there
    assert results["views"]["online"]["accuracy_matrix"][0] == results["accuracy_matrix"][0]
    assert results["parameters"]["pet_all_instances"] == 2 * results["parameters"]["pet"]
