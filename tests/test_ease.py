"""EASE: an adapter per experience, prototypes in every adapter's space, completion of old classes, block scores."""
import torch

from clpeft.config import resolve
from clpeft.run import run
from clpeft.streams.stream import materialize

ADAPTFORMER = {"position": "mlp_residual", "activation": "relu", "dropout": 0.1, "scale": 0.1, "bottleneck": 8,
               "blocks": None}


def test_ease_prototypes_and_scores_are_what_each_adapter_alone_gives(fast_scenario, tmp_path):
    config = resolve(fast_scenario, strategy="ease", pet="adapter", seed=0, overrides={"pet": ADAPTFORMER})
    seen = {}

    def check(i, strategy, stream):
        model, pet, protos = strategy.model, strategy.pet, strategy.protos
        assert strategy.names == [f"e{k}" for k in range(i + 1)] and protos.instances == i + 1
        for name in strategy.names:  # every instance frozen once its experience is over
            assert not any(p.requires_grad for p in pet.parameters(name))
        seen[i] = {k: v.detach().clone() for k, v in pet.named_parameters("e0").items()}
        model.eval()
        x, y = materialize(stream.train_stream[i].dataset.eval())
        with torch.no_grad():
            alone = torch.stack([_features(model, pet, name, x) for name in strategy.names], 1)
            for c in y.unique().tolist():  # measured prototypes: class means under every instance
                for k in range(i + 1):
                    assert torch.allclose(protos.prototypes[c, k], alone[y == c, k].mean(0), atol=1e-4)
            assert (protos.home[y.unique()] == i).all()
            xt, _ = materialize(stream.test_stream[0].dataset)
            feats = torch.stack([_features(model, pet, name, xt) for name in strategy.names], 1)
            logits = strategy.predict(xt).logits
            assert torch.allclose(logits, protos.scores(feats, strategy.options.alpha), atol=1e-4)

    results = run(config, out_dir=tmp_path / "ease", after_experience=check)
    for k, v in seen[0].items():  # experience 0's adapter never moved afterwards
        assert torch.equal(seen[len(seen) - 1][k], v)
    assert results["strategy_summary"]["forward_passes_per_test_sample"] == 3
    assert results["health"]["status"] == "ok"


def _features(model, pet, name, x):
    with pet.using(name):
        return model.features(x)
