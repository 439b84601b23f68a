"""JARe's retrieval and mixing against the official code (Pbihao/SLM, SLM-bert) on the same queries: clpeft's
frozen-backbone features of the shared digits stream (the backbone of the digits32 scenario, 96-d, 6 groups).

What is compared, each on identical inputs:
1. key fitting: the official key retriever (vectordb/models/retriever.Retriever.forward → key_loss, trained as
   vectordb/train.py trains it: AdamW wd 0.01, StepLR(2, 0.1), gradient-norm clip 0.1) against clpeft's
   `fit_keys`, from the same initial keys, one full-batch step per epoch, key dropout off (its masks come from two
   different random streams);
2. retrieval: the official inference retriever (models/retriever.Retriever.forward with use_distance_weight, the
   batch-mean similarity, top-k, weights ∝ similarity) against clpeft's `retrieve(..., per_sample=False)` (the
   `retrieval: batch` option) on every test batch: the slots chosen and their weights;
3. mixing: the official weight offset Σ_k w_k·a_kᵀb_k added to the attention output projection
   (models/bert.py: F.linear(h, W + offset, b)) against clpeft's LoRA bank mixing the same increments
   (a_k → LoRA B, b_k → LoRA A) in a forward of the ViT, compared at every block's projection output.

Shims only: both official retrievers are built without their sentence encoder (`__init__` loads
sentence-transformers/nli-mpnet-base-v2 from the hub); `encode` returns the given queries; their configuration
attributes are set as their `Config` sets them."""
import argparse
import json
import sys

import torch
import torch.nn.functional as F

p = argparse.ArgumentParser()
p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
p.add_argument("--slots", type=int, default=4)
p.add_argument("--top-k", type=int, default=4)
p.add_argument("--groups", type=int, default=6)
p.add_argument("--batch", type=int, default=16)
p.add_argument("--out", help="the record of every run (reports/parity/jare_runs.json)")
args = p.parse_args()
torch.set_num_threads(1)

from clpeft.config import load_scenario, resolve  # noqa: E402
from clpeft.run import build  # noqa: E402
from clpeft.streams.stream import materialize  # noqa: E402
from clpeft.strategies.jare import fit_keys, retrieve  # noqa: E402

sys.path.insert(0, "/tmp/slm/SLM-bert")
from models.retriever import Retriever as InferenceRetriever  # noqa: E402
from vectordb.models.retriever import Retriever as KeyRetriever  # noqa: E402

def bare(cls, **attrs):
    """An official retriever without its sentence encoder; ``encode`` passes the queries through."""
    r = cls.__new__(cls)
    torch.nn.Module.__init__(r)
    for k, v in attrs.items():
        setattr(r, k, v)
    r.encode = lambda inputs: inputs
    return r


def run(seed: int) -> dict:
    """One run: keys fitted from the same start, retrieval on every test batch, mixing in the forward."""
    scenario = load_scenario("digits_b0_inc2")
    config = resolve(scenario, strategy="jare", seed=seed, overrides={
        "model": {"backbone": "vit_tiny_fmnist_32"}, "stream": {"class_order_seed": None},
        "options": {"slots": args.slots, "top_k": args.top_k, "groups": args.groups}})
    built = build(config)
    model, pet = built.model.eval(), built.pet
    test = [materialize(e.dataset) for e in built.stream.test_stream]
    train = [materialize(e.dataset) for e in built.stream.train_stream]
    with torch.no_grad(), pet.using(None):
        q_train = [model.features(x) for x, _ in train]
        q_test = torch.cat([model.features(x) for x, _ in test])
    G, d = args.groups, q_test.shape[1]
    out = {"seed": seed, "settings": {k: v for k, v in vars(args).items() if k not in ("seeds", "out")}, "query_dim": d}


    # ---------------------------------------------------------------- 1. key fitting
    epochs, lr = 3, 5e-4
    fits = []
    keys_per_experience = []
    for t, q in enumerate(q_train):
        generator = torch.Generator().manual_seed(1000 * seed + t)
        state = generator.get_state()
        ours = fit_keys(q, args.slots, G, generator, epochs=epochs, lr=lr, batch_size=len(q), dropout=0.0)
        generator.set_state(state)  # the same initial keys: clpeft's group-average init from the same permutation
        perm = torch.randperm(len(q), generator=generator)
        init = torch.stack([q[perm[s::args.slots]].mean(0) for s in range(args.slots)])
        official = bare(KeyRetriever, similarity_type="cosine", pool_size=args.slots, weight_topk=min(2, args.slots),
                        groups=G, random_dropout=None, pool_train_keys=True, last_keys=None)
        official.keys = torch.nn.Parameter(init.reshape(args.slots, G, d // G).transpose(0, 1).unsqueeze(0).contiguous())
        official.train()
        official(q)["key_loss"].backward()  # the first gradient, to say where the two fits part
        first_grad = official.keys.grad[0].clone()
        official.keys.grad = None
        optimizer = torch.optim.AdamW(official.parameters(), lr=lr, weight_decay=0.01)
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.1)
        for _ in range(epochs):  # vectordb/train.py's loop, one full batch per epoch
            optimizer.zero_grad()
            loss = official(q)["key_loss"]
            loss.backward()
            torch.nn.utils.clip_grad_norm_(official.parameters(), 0.1)
            optimizer.step()
            scheduler.step()
        theirs = official.keys.detach()[0]
        fits.append({"experience": t, "max_abs_key_difference": float((ours - theirs).abs().max()),
                     "key_scale": float(theirs.abs().max()),
                     "first_gradient_at_largest_difference": float(first_grad.flatten()[(ours - theirs).abs().argmax()]),
                     "median_abs_first_gradient": float(first_grad.abs().median()),
                     "moved": float((theirs - official.keys.new_tensor(init.reshape(args.slots, G, -1).transpose(0, 1))).abs().max())})
        keys_per_experience.append(ours)
    out["key_fitting"] = fits
    keys = torch.cat(keys_per_experience, dim=1)  # [G, P, d/G]: every experience's slots, in order
    P = keys.shape[1]

    # ---------------------------------------------------------------- 2. retrieval, once per test batch
    inference = bare(InferenceRetriever, similarity_type="cosine", pool_size=P, weight_topk=args.top_k, groups=G,
                     random_dropout=0.25, pool_train_keys=False, pool_train_weights=False, num_hidden_layers=len(model.backbone.blocks),
                     hidden_size=d, low_rank=8, last_keys=None)
    inference.keys = torch.nn.Parameter(keys.unsqueeze(0).clone(), requires_grad=False)
    rank = 8
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(P, len(model.backbone.blocks), rank, d, generator=g) * 0.05
    b = torch.randn(P, len(model.backbone.blocks), rank, d, generator=g) * 0.05
    inference.weight_offset = torch.nn.Parameter(torch.stack([a.flatten(1), b.flatten(1)], dim=-2), requires_grad=False)
    inference.eval()
    order = torch.randperm(len(q_test), generator=torch.Generator().manual_seed(seed))  # mixed-class batches
    take_along_dim, chosen = torch.take_along_dim, []


    def spy(tensor, indices, dim=None):
        """The official forward picks its slots with take_along_dim(weight_offset, idx_vote, 0): record idx_vote."""
        chosen.append(indices.flatten().clone())
        return take_along_dim(tensor, indices, dim=dim)


    same_slots, batches = 0, []
    for start in range(0, len(order), args.batch):
        rows = order[start:start + args.batch]
        torch.take_along_dim = spy
        with torch.no_grad():
            official_out = inference(q_test[rows], use_distance_weight=True)
        torch.take_along_dim = take_along_dim
        index, weights = retrieve(q_test[rows], keys, args.top_k, per_sample=False)
        same_slots += int(torch.equal(index[0].sort().values, chosen[-1].sort().values) and bool((index == index[0]).all()))
        batches.append((rows, official_out["weight_offset"], index, weights))
    out["retrieval"] = {"test_batches": len(batches), "same_slots": same_slots,
                        "note": "the weights are compared through the mixed weights (3.)"}

    # ---------------------------------------------------------------- 3. mixing in a forward
    names = [f"s{i}" for i in range(P)]
    if pet.names == ["default"]:
        pet.remove("default")
    for name in names:
        pet.add(name)
    for i, name in enumerate(names):
        for block in range(len(model.backbone.blocks)):
            lora = pet.layers[f"blocks.{block}.attn.proj"].instances[name]
            with torch.no_grad():
                lora.lora_A[0].copy_(b[i, block])                                # b_k (rank × in): the down projection
                lora.lora_B[0].copy_(a[i, block].T / lora.slice_scale(0))        # a_kᵀ (out × rank), clpeft's alpha/rank undone
    pet.activate(None)
    captured = {}
    hooks = [blk.attn.proj.register_forward_hook(lambda m, i, o, k=k: captured.__setitem__(k, (i[0].detach(), o.detach())))
             for k, blk in enumerate(model.backbone.blocks)]
    max_out_diff, scale = 0.0, 0.0
    x_test = torch.cat([x for x, _ in test])
    for rows, offset, index, weights in batches:
        with torch.no_grad(), pet.mixing(names, weights, index=index):
            model.features(x_test[rows])
        for k, blk in enumerate(model.backbone.blocks):
            h, ours = captured[k]
            base = blk.attn.proj.base  # the stock Linear inside clpeft's LoRA layer
            theirs = F.linear(h, base.weight + offset[k], base.bias)
            max_out_diff = max(max_out_diff, float((ours - theirs).abs().max()))
            scale = max(scale, float(theirs.abs().max()))
    for h in hooks:
        h.remove()
    out["mixing"] = {"max_abs_projection_output_difference": max_out_diff, "output_scale": scale}

    return out


runs = [run(seed) for seed in args.seeds]
record = {"official": "Pbihao/SLM@bef385c", "compared": "key fitting, retrieval once per batch, mixing",
          "threads": torch.get_num_threads(), "runs": runs}
print(json.dumps({"runs": [{k: r[k] for k in ("seed", "retrieval", "mixing")} for r in runs]}, indent=1))
if args.out:
    json.dump(record, open(args.out, "w"), indent=1)
