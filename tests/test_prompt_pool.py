"""The prompt pool on stock timm and the three prompt-pool methods: prefix layout per head, per-sample selection,
parameter counts against the official configurations, CODA's components, frozen backbones."""
import copy

import pytest
import timm
import torch

from clpeft.config import resolve
from clpeft.errors import ClpeftError
from clpeft.pet.pool import PromptPool
from clpeft.run import build


def tiny_vit(depth=3):
    torch.manual_seed(0)
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, img_size=32, patch_size=8,
                             depth=depth).eval()


def test_each_sample_gets_its_own_prompts_keys_and_values_per_head():
    """Side by side prompts, chosen per sample, equal that sample run alone with its prompts: the per-head
    layout of keys and values is the sample's own (the reshape-for-permute bug of several DualPrompt ports
    mixes samples' keys and values and fails here)."""
    net = tiny_vit()
    pool = PromptPool(net, size=6, length=4, blocks=[0, 1], key_dim=192)
    with torch.no_grad():
        for p in pool.prompt_parameters():
            p.normal_(0, 1.0)
    x = torch.randn(4, 3, 32, 32)
    index = torch.tensor([[0, 3], [5, 1], [2, 2], [4, 0]])
    with torch.no_grad(), pool.concatenated(index):
        together = net(x)
    for b in range(4):
        with torch.no_grad(), pool.concatenated(index[b:b + 1]):
            alone = net(x[b:b + 1])
        assert torch.allclose(together[b], alone[0], atol=1e-5)
    with torch.no_grad(), pool.off():
        plain = net(x)
    assert not torch.allclose(plain, together, atol=1e-3)  # the prompts act


def test_weighted_prompts_are_the_weighted_sum_of_components_per_sample():
    net = tiny_vit()
    pool = PromptPool(net, size=4, length=2, blocks=[1], key_dim=192, attention=True)
    weights = torch.tensor([[0.5, -0.2, 0.0, 1.0], [0.0, 1.0, 0.0, 0.0]])
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad(), pool.weighted(weights):
        mixed = net(x)
    with torch.no_grad(), pool.concatenated(torch.tensor([[1]])):  # sample 1's weights pick component 1 alone
        one = net(x[1:])
    assert torch.allclose(mixed[1], one[0], atol=1e-5)
    q = torch.randn(2, 192)
    sim = pool.similarity(q)
    a = torch.nn.functional.normalize(q[:, None, :] * pool.attention[None], dim=-1)
    assert torch.allclose(sim, (a * torch.nn.functional.normalize(pool.keys, dim=-1)[None]).sum(-1), atol=1e-6)


@pytest.mark.parametrize("strategy,expected", [
    ("l2p", 30 * 20 * 768 + 30 * 768),                                   # L2P++: pool 30, length 20, block 0
    ("dualprompt", 3 * (10 * 20 * 768 + 10 * 768) + 2 * 6 * 768),         # E 10 × 20 in blocks 2-4, G 6 in 0-1
    ("coda_prompt", 5 * (100 * 8 * 768 + 2 * 100 * 768)),                # 100 components × 8, K and A, blocks 0-4
])
def test_prompt_parameters_match_the_official_configurations_on_vit_b16(strategy, expected):
    """CODA-Prompt's CIFAR-100 settings (`--prompt_param 30 20 -1`, `10 20 6`, `100 8 0.0`) on ViT-B/16."""
    from clpeft.models.continual_model import build_model
    from clpeft.streams.datasets import InputSpec
    from clpeft.strategies import get_strategy

    model = build_model("vit_base_patch16_224", 100, InputSpec(3, 224), pretrained=False)
    cls = get_strategy(strategy)
    from clpeft.strategies import TrainSettings

    s = cls(model=model, settings=TrainSettings(loss_scope="current"), device=torch.device("cpu"), n_experiences=10,
            options=cls.parse_options({}))
    pools = list(model.extras.values())
    counted = sum(p.numel() for pool in pools for p in pool.prompt_parameters()) + \
        sum(t.numel() for pool in pools for t in (pool.keys, pool.attention) if t is not None)
    assert counted == expected
    from clpeft.pet.inject import base_parameter_ids

    base = base_parameter_ids(model.backbone)
    assert base and not any(p.requires_grad for p in model.backbone.parameters() if id(p) in base)
    assert not {id(p) for p in s.trainable_parameters()} & base


@pytest.fixture
def prompt_scenario(fast_scenario):
    fast_scenario["stream"] = {"dataset": "digits", "n_experiences": 2}
    fast_scenario["train"].update(epochs=1, lr=0.01)
    return fast_scenario


@pytest.mark.parametrize("strategy", ["l2p", "dualprompt", "coda_prompt"])
def test_only_prompts_keys_and_heads_train_the_backbone_stays_bit_identical(prompt_scenario, strategy):
    stream, model, _, s, _ = build(resolve(prompt_scenario, strategy=strategy))
    base = {k: v.clone() for k, v in model.backbone.state_dict().items() if ".instances." not in k}
    pools_before = {k: v.clone() for k, v in model.extras.state_dict().items()}
    s.train(stream.train_stream[0])
    after = model.backbone.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in base.items())
    assert any(not torch.equal(v, model.extras.state_dict()[k]) for k, v in pools_before.items())


def test_coda_components_are_orthonormal_when_drawn_and_frozen_after_their_experience(prompt_scenario):
    prompt_scenario["strategies"] = {"coda_prompt": {"options": {"pool_size": 8, "blocks": [0, 2]}}}
    stream, model, _, s, _ = build(resolve(prompt_scenario, strategy="coda_prompt"))
    eye = torch.eye(4)
    for pool in s.pools:
        for matrix in (pool.prompt_matrix()[:4], pool.keys[:4], pool.attention[:4]):
            assert (matrix.detach() @ matrix.detach().T - eye).abs().max() < 1e-5
        assert pool.keys[4:].abs().max() == 0 and pool.prompt_matrix()[4:].abs().max() == 0  # not drawn yet
    s.train(stream.train_stream[0])
    first = [(pool.prompt_matrix()[:4].clone(), pool.keys[:4].detach().clone(), pool.attention[:4].detach().clone())
             for pool in s.pools]
    drawn = []
    before_experience = s.before_experience

    def spy():  # the components of experience 1 right after they are drawn
        before_experience()
        drawn.extend((pool.prompt_matrix()[4:8].clone(), pool.keys[4:8].detach().clone()) for pool in s.pools)

    s.before_experience = spy
    s.train(stream.train_stream[1])
    for i, (pool, (p, k, a)) in enumerate(zip(s.pools, first)):
        assert torch.equal(pool.prompt_matrix()[:4], p) and torch.equal(pool.keys[:4], k)  # frozen
        assert torch.equal(pool.attention[:4], a)
        new_p, new_k = drawn[i]
        for new, old in ((new_p, p), (new_k, k)):  # unit vectors, orthogonal to each other and to the old ones
            assert (new @ new.T - eye).abs().max() < 1e-5 and (new @ old.T).abs().max() < 1e-5
    with pytest.raises(ClpeftError, match="splits options.pool_size=7 components evenly over 2 experiences"):
        prompt_scenario["strategies"]["coda_prompt"]["options"]["pool_size"] = 7
        resolve(prompt_scenario, strategy="coda_prompt")


def test_dualprompt_uses_the_task_id_in_training_only_and_predicts_per_sample(prompt_scenario):
    stream, model, _, s, _ = build(resolve(prompt_scenario, strategy="dualprompt"))
    assert [pool.keys.shape[0] for pool in s.experts] == [2, 2, 2]  # one E-prompt per experience: no untrained key
    for exp in stream.train_stream:
        s.train(exp)
    model.eval()
    x = next(stream.eval_batches(16, 0))[0]
    with torch.no_grad():
        whole = s.predict(x)
        s.experience_index = 0  # the experience counter never reaches predict
        again = s.predict(x)
        alone = [s.predict(x[b:b + 1]) for b in range(4)]
    assert torch.equal(whole.logits, again.logits) and torch.equal(whole.task, again.task)
    for b in range(4):
        assert torch.allclose(whole.logits[b], alone[b].logits[0], atol=1e-5)
    prompt_scenario["strategies"] = {"dualprompt": {"options": {"pool_size": 1}}}
    with pytest.raises(ClpeftError, match="2 experiences need options.pool_size ≥ 2"):
        resolve(prompt_scenario, strategy="dualprompt")


def test_l2p_batch_vote_is_a_labelled_option_that_gives_every_sample_the_same_prompts(prompt_scenario):
    scenario = copy.deepcopy(prompt_scenario)
    scenario["strategies"] = {"l2p": {"options": {"batch_vote": True, "pool_size": 6, "top_k": 2}}}
    stream, model, _, s, _ = build(resolve(scenario, strategy="l2p"))
    x = next(stream.eval_batches(16, 0))[0]
    index, _ = s._select(x)
    assert (index == index[0]).all()
    per_sample = build(resolve(prompt_scenario, strategy="l2p")).strategy
    assert not (per_sample._select(x)[0] == per_sample._select(x)[0][0]).all()


def test_cosine_quarter_gives_the_learning_rates_codas_scheduler_logs():
    """The rates CODA-Prompt's CosineSchedule (K = 10, base 0.001) printed per epoch in the parity runs: its
    constructor leaves last_epoch at -1, so the first two epochs share the full rate."""
    from types import SimpleNamespace

    from clpeft.strategies.base import CLStrategy, Phase

    logged = [0.001, 0.001, 0.0009851093261547738, 0.0009408807689542254, 0.0008686315144381912,
              0.0007705132427757892, 0.0006494480483301837, 0.0005090414157503712, 0.00035347484377925713,
              0.00018738131458572452]
    strategy = CLStrategy.__new__(CLStrategy)
    strategy.settings = SimpleNamespace(schedule="cosine_quarter")
    optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=0.001)
    scheduler = strategy.make_scheduler(optimizer, Phase("train", 10))
    rates = []
    for _ in range(10):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert rates == pytest.approx(logged, rel=1e-9)
