"""Prototypes per (class, PET instance): completion of old classes in new instances' spaces and the block scores
(clpeft.models.proto_matrix), checked against the formulas computed by hand."""
import math

import pytest
import torch

from clpeft.errors import ClpeftError
from clpeft.models.heads import UNSEEN_LOGIT
from clpeft.models.proto_matrix import ProtoMatrix


def cos(a, b):
    return float(torch.dot(a, b) / (a.norm() * b.norm()))


def hand_built():
    """4 classes, 2 instances: classes 0, 1 learned with instance 0; classes 2, 3 with instance 1."""
    P = ProtoMatrix(4, 2)
    P.add_instance(), P.add_instance()
    P.fill(0, [0, 1], torch.tensor([[1.0, 0.0], [0.0, 1.0]]), home=True)
    P.fill(0, [2, 3], torch.tensor([[1.0, 1.0], [1.0, -1.0]]))          # new classes seen through the old instance
    P.fill(1, [2, 3], torch.tensor([[2.0, 0.0], [0.0, 3.0]]), home=True)
    return P


def test_completion_equals_the_formula_on_a_hand_built_case():
    P = hand_built()
    P.complete([0, 1], target=1, donors=[2, 3], tau=0.5)
    for c, own in ((0, torch.tensor([1.0, 0.0])), (1, torch.tensor([0.0, 1.0]))):
        sims = [cos(own, torch.tensor([1.0, 1.0])), cos(own, torch.tensor([1.0, -1.0]))]
        w = [math.exp(s / 0.5) for s in sims]
        w = [v / sum(w) for v in w]
        expected = w[0] * torch.tensor([2.0, 0.0]) + w[1] * torch.tensor([0.0, 3.0])
        assert torch.allclose(P.prototypes[c, 1], expected, atol=1e-6)
    assert P.measured[:, 1].tolist() == [False, False, True, True]  # completed, not measured


def test_block_scores_weight_the_home_space_and_the_others_by_alpha():
    P = hand_built()
    P.complete([0, 1], target=1, donors=[2, 3])
    f = torch.tensor([[[0.3, 0.7], [1.0, -0.5]]])       # one sample, features under instances 0 and 1
    scores = P.scores(f, alpha=0.1)
    for c in range(4):
        home = int(P.home[c])
        own = cos(f[0, home], P.prototypes[c, home])
        other = cos(f[0, 1 - home], P.prototypes[c, 1 - home])
        assert abs(float(scores[0, c]) - (own + 0.1 / 1 * other)) < 1e-6


def test_unlearned_classes_score_unseen_and_bad_use_is_refused():
    P = ProtoMatrix(3, 2)
    P.add_instance()
    P.fill(0, [0], torch.tensor([[1.0, 0.0]]), home=True)
    scores = P.scores(torch.tensor([[[1.0, 0.0]]]))
    assert scores[0, 1] == UNSEEN_LOGIT and scores[0, 0] == pytest.approx(1.0)
    with pytest.raises(ClpeftError, match="instances"):
        P.scores(torch.zeros(1, 2, 2))
    with pytest.raises(ClpeftError, match="measured"):
        P.complete([0], target=0, donors=[1])
