"""Classifier alignment on sampled features (clpeft.models.head_alignment), shared by SLCA and the methods after it."""
import torch

from clpeft.models.class_stats import ClassStatistics
from clpeft.models.head_alignment import GaussianSampler, align_head


def stats_of(means, n=400, seed=0):
    g = torch.Generator().manual_seed(seed)
    feats = torch.cat([torch.randn(n, len(m), generator=g) * 0.5 + torch.tensor(m) for m in means])
    labels = torch.arange(len(means)).repeat_interleave(n)
    stats = ClassStatistics(len(means[0]), len(means), class_second_moments=True)
    stats.add(feats, labels)
    return stats


def test_the_sampler_draws_each_class_with_its_moments_in_class_order_and_scaled_means():
    stats = stats_of([[2.0, 0.0, 0.0], [0.0, -2.0, 1.0]])
    sampler = GaussianSampler(stats, [0, 1], ridge=1e-4, mean_scale=lambda c: 0.5 if c == 0 else 1.0)
    x, y = sampler.sample(20000, torch.Generator().manual_seed(1))
    assert x.dtype == torch.float32 and y.tolist() == [0] * 20000 + [1] * 20000
    for c, scale in ((0, 0.5), (1, 1.0)):
        mean, cov = stats.gaussian(c, 1e-4)
        assert torch.allclose(x[y == c].double().mean(0), mean * scale, atol=0.02)
        assert torch.allclose(torch.cov(x[y == c].double().T), cov, atol=0.02)


def test_alignment_separates_the_classes_and_is_reproducible_from_its_generator():
    stats = stats_of([[3.0, 0.0], [-3.0, 0.0], [0.0, 3.0]])
    sampler = GaussianSampler(stats, [0, 1, 2])

    def aligned(seed):
        torch.manual_seed(0)
        head = torch.nn.Linear(2, 3)
        losses = align_head(head, list(head.parameters()), sampler, epochs=5, lr=0.05, samples_per_class=64,
                            batch_size=64, generator=torch.Generator().manual_seed(seed), weight_decay=5e-4)
        return head, losses

    head, losses = aligned(3)
    x, y = sampler.sample(200, torch.Generator().manual_seed(9))
    assert (head(x).argmax(1) == y).float().mean() > 0.95 and losses[-1] < losses[0]
    again, losses_again = aligned(3)
    assert losses_again == losses and torch.equal(again.weight, head.weight)
    other, _ = aligned(4)
    assert not torch.equal(other.weight, head.weight)
