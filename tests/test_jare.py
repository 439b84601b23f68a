"""JARe/DTKR: key fitting and per-sample retrieval, the sparse LoRA bank, frozen old slots and keys."""
import pytest
import timm
import torch

from clpeft.config import resolve
from clpeft.errors import ClpeftError
from clpeft.pet import LoRAConfig, inject_pet
from clpeft.run import run
from clpeft.strategies.jare import fit_keys, retrieve


def clustered_queries(experiences=4, per=60, dim=48, noise=0.15, seed=0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(experiences, dim, generator=g)
    return [centres[e] + noise * torch.randn(per, dim, generator=g) for e in range(experiences)]


def assert_each_sample_as_alone(pet, forward, x, weights, index):
    """The sparse mixture over a batch gives every sample what it gets in a batch of its own."""
    with torch.no_grad():
        with pet.mixing(pet.names, weights, index=index):
            together = forward(x)
        for b in range(len(x)):
            with pet.mixing(pet.names, weights[b:b + 1], index=index[b:b + 1]):
                assert torch.allclose(together[b:b + 1], forward(x[b:b + 1]), atol=1e-5)
    return together


def test_retrieval_picks_each_experiences_own_slots_on_separated_experiences():
    data = clustered_queries()
    keys = [fit_keys(q, slots=3, groups=6, generator=torch.Generator().manual_seed(e)) for e, q in enumerate(data)]
    bank = torch.cat(keys, dim=1)  # [G, 4·3, c]
    owner = torch.arange(4).repeat_interleave(3)
    test = clustered_queries(seed=0)  # same centres, new noise draws below
    test = [c + 0.15 * torch.randn_like(c) for c in test]
    for e, q in enumerate(test):
        index, weights = retrieve(q, bank, top_k=3)
        assert (owner[index[:, 0]] == e).all()
        assert torch.allclose(weights.sum(1), torch.ones(len(q)))
        assert (owner[index] == e).float().mean() > 0.95  # the top-3 are (almost) all its own slots


def test_batch_retrieval_gives_every_sample_the_same_slots():
    data = clustered_queries(experiences=2)
    bank = torch.cat([fit_keys(q, 2, 6, torch.Generator().manual_seed(e)) for e, q in enumerate(data)], dim=1)
    mixed = torch.cat([data[0][:5], data[1][:5]])
    per_sample, _ = retrieve(mixed, bank, top_k=2)
    per_batch, _ = retrieve(mixed, bank, top_k=2, per_sample=False)
    assert len({tuple(r) for r in per_sample[:, :1].tolist()}) > 1
    assert len({tuple(r) for r in per_batch.tolist()}) == 1


def test_key_fitting_refuses_a_query_size_the_groups_do_not_divide():
    with pytest.raises(ClpeftError, match="not divisible by groups=5"):
        fit_keys(torch.randn(10, 48), slots=2, groups=5, generator=torch.Generator())


def test_sparse_bank_mixture_per_sample_equals_each_sample_alone_and_the_dense_mixture():
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, img_size=32, patch_size=8).eval()
    pet = inject_pet(model, LoRAConfig(rank=4, alpha=4.0, targets=["blocks.*.attn.proj"]), name="s0")
    for n in range(1, 6):
        pet.add(f"s{n}")
    with torch.no_grad():
        for name in pet.names:
            for p in pet.parameters(name):
                p.normal_(0, 0.05)
    x = torch.randn(5, 3, 32, 32)
    index = torch.stack([torch.randperm(6)[:3] for _ in range(5)])
    weights = torch.softmax(torch.randn(5, 3), dim=1)
    batched = assert_each_sample_as_alone(pet, model, x, weights, index)
    with torch.no_grad():
        dense = torch.zeros(5, 6).scatter_add(1, index, weights)
        with pet.mixing(pet.names, dense):
            assert torch.allclose(batched, model(x), atol=1e-5)
    with pytest.raises(ClpeftError, match="both be"):
        with pet.mixing(pet.names, weights, index=index[:, :2]):
            pass


def test_old_slots_and_keys_never_change_and_retrieval_is_recorded(fast_scenario):
    fast_scenario["strategies"] = {"jare": {"pet": "lora", "pet_settings": {"targets": ["blocks.*.attn.proj"], "rank": 4},
                                            "train": {"loss_scope": "current"}}}
    config = resolve(fast_scenario, strategy="jare", overrides={"options": {"slots": 2, "key_epochs": 1}})
    snapshots = []

    def keep(i, strategy, stream):
        names = strategy.slot_names[i]
        snapshots.append((strategy.keys[i].clone(), {n: [p.detach().clone() for p in strategy.pet.parameters(n)] for n in names}))
        final_strategy.append(strategy)

    final_strategy = []
    results = run(config, after_experience=keep)
    strategy = final_strategy[-1]
    for i, (keys, slots) in enumerate(snapshots):
        assert torch.equal(strategy.keys[i], keys)
        for name, params in slots.items():
            for now, then in zip(strategy.pet.parameters(name), params, strict=True):
                assert torch.equal(now, then), f"slot {name} of experience {i} changed later"
    assert any(p.abs().sum() > 0 for p in snapshots[0][1]["e0s0"])  # the increments did train
    assert len(results["task_inference_matrix"]) == 3  # retrieval accuracy after every experience
    assert results["task_inference_matrix"][0][0] == 1.0  # one experience: every sample retrieves it
    assert 0.0 <= results["metrics"]["final_task_inference"] <= 1.0
    summary = results["strategy_summary"]
    assert summary["retrieval"] == "sample" and summary["bank_slots"] == 6
    assert summary["bytes_per_experience"] == 4 * (2 * summary["parameters_per_slot"] + summary["key_values_per_experience"])
    assert not all(row == [] for row in results["accuracy_matrix_task_il"])  # oracle retrieval (task-IL)


def test_jare_needs_lora_and_known_options(fast_scenario):
    with pytest.raises(ClpeftError, match="jare works with --pet lora, not adapter"):
        resolve(fast_scenario, strategy="jare", pet="adapter")
    with pytest.raises(ClpeftError, match="jare needs a PET module; pass --pet lora"):
        resolve(fast_scenario, strategy="jare")
    with pytest.raises(ClpeftError, match="options.retrieval must be one of sample, batch"):
        resolve(fast_scenario, strategy="jare", pet="lora", overrides={"options": {"retrieval": "task"}})


def test_retrieval_and_sparse_mixing_on_a_bert_encoder_like_minilm():
    """The text path: a BERT-family encoder (MiniLM's architecture, random weights), mean-pooled frozen output
    as the query, LoRA slots on every attention output projection (JARe's official placement)."""
    import transformers  # the test extra installs it: the text path is always tested
    torch.manual_seed(0)
    cfg = transformers.BertConfig(hidden_size=48, num_hidden_layers=3, num_attention_heads=4, intermediate_size=96,
                                  vocab_size=100, max_position_embeddings=32)
    bert = transformers.BertModel(cfg).eval()
    pet = inject_pet(bert, LoRAConfig(rank=4, alpha=4.0, targets=["encoder.layer.*.attention.output.dense"]), name="e0s0")
    assert len(pet.layers) == 3
    for name in ("e0s1", "e1s0", "e1s1"):
        pet.add(name)
    with torch.no_grad():
        for name in pet.names:
            for p in pet.parameters(name):
                p.normal_(0, 0.05)

    def pooled(ids):
        mask = torch.ones_like(ids)
        return (bert(input_ids=ids, attention_mask=mask).last_hidden_state * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)

    g = torch.Generator().manual_seed(1)
    texts = [torch.randint(0, 50, (40, 12), generator=g), torch.randint(50, 100, (40, 12), generator=g)]  # two "topics"
    with torch.no_grad(), pet.using(None):
        queries = [pooled(t) for t in texts]
    bank = torch.cat([fit_keys(q, 2, 6, torch.Generator().manual_seed(e)) for e, q in enumerate(queries)], dim=1)
    mixed = torch.cat([texts[0][:4], texts[1][:4]])
    with torch.no_grad(), pet.using(None):
        index, weights = retrieve(pooled(mixed), bank, top_k=2)
    assert (index[:4, 0] < 2).all() and (index[4:, 0] >= 2).all()  # each text retrieves its topic's slots
    assert_each_sample_as_alone(pet, pooled, mixed, weights, index)
