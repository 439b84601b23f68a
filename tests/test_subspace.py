"""Layer-input subspaces (clpeft.pet.subspace): the recorded Gram is the token average of x xᵀ, and the memory's
DualGPM rule keeps the number of directions its energy threshold says, as a remembered (remove) or free (retain)
basis, with the remembered part projected out of later inputs."""
import pytest
import torch
from torch import nn

from clpeft.errors import ClpeftError
from clpeft.pet.subspace import InputGram, SubspaceMemory


def test_the_gram_is_the_token_average_of_outer_products_in_float64():
    torch.manual_seed(0)
    layer = nn.Linear(6, 4)
    gram = InputGram({"layer": layer})
    xs = [torch.randn(3, 5, 6), torch.randn(2, 5, 6)]  # [batch, tokens, width]
    with gram.recording():
        for x in xs:
            layer(x)
    flat = torch.cat([x.reshape(-1, 6) for x in xs]).double()
    assert gram.counts["layer"] == 25
    assert torch.allclose(gram.gram("layer"), flat.T @ flat / 25, atol=1e-12)
    assert gram.gram("layer").dtype == torch.float64
    layer(torch.randn(1, 5, 6))  # outside recording(): nothing is added, the hook is gone
    assert gram.counts["layer"] == 25 and not layer._forward_pre_hooks
    with pytest.raises(ClpeftError, match="no input reached layer"):
        with gram.recording():
            pass
        gram.gram("layer")


def spectrum(values, seed=0):
    """A symmetric matrix with eigenvalues ``values`` in a random orthonormal basis (and that basis)."""
    g = torch.Generator().manual_seed(seed)
    Q = torch.linalg.qr(torch.randn(len(values), len(values), generator=g, dtype=torch.float64))[0]
    return Q @ torch.diag(torch.tensor(values, dtype=torch.float64)) @ Q.T, Q


def test_the_first_experience_keeps_the_directions_its_energy_threshold_says():
    C, Q = spectrum([4.0, 2.0, 1.5, 1.0, 0.5, 0.25, 0.1, 0.05])
    # squared energies 16, 4, 2.25, 1, ... of 23.575: cumulative shares 0.679, 0.848, 0.944, 0.986, ...; the rule
    # keeps the directions whose cumulative share is still below ε = 0.95: three
    memory = SubspaceMemory("squared")
    memory.update([C], threshold=0.95)
    assert memory.bases[0].shape == (8, 3) and memory.kinds == ["remove"] and memory.dimension(0) == 3
    assert torch.allclose((memory.bases[0].T @ Q[:, :3]).abs(), torch.eye(3, dtype=torch.float64), atol=1e-9)
    plain = SubspaceMemory("plain")  # on the singular values themselves (GPM): 0.426, 0.638, 0.798, 0.904, 0.957
    plain.update([C], threshold=0.95)
    assert plain.bases[0].shape == (8, 4)


def test_the_residual_has_no_component_in_the_remembered_directions_and_a_new_experience_adds_its_own():
    C0, Q = spectrum([5.0, 4.0, 3.0] + [0.01] * 5)  # squared shares 0.5, 0.82, 1.0: two kept at ε = 0.9
    memory = SubspaceMemory()
    memory.update([C0], threshold=0.9)
    M = memory.bases[0]
    assert memory.kinds == ["remove"] and M.shape[1] == 2
    C1 = Q @ torch.diag(torch.tensor([3.0, 0, 0, 6.0] + [0.01] * 4, dtype=torch.float64)) @ Q.T
    residual = memory.residual(C1, 0)
    assert torch.allclose(M.T @ residual, torch.zeros_like(M.T @ residual), atol=1e-9)
    memory.update([C1], threshold=0.9)  # 20 % of C1's energy is remembered; its new direction brings the rest
    grown = memory.bases[0]
    assert grown.shape[1] == 3 and memory.dimension(0) == 3
    assert torch.allclose(grown.T @ grown, torch.eye(3, dtype=torch.float64), atol=1e-9)
    assert (grown.T @ Q[:, 3]).norm() == pytest.approx(1.0, abs=1e-9)


def test_a_basis_past_half_the_width_is_kept_as_its_complement_and_shrinks_from_there():
    C, Q = spectrum([1.0] * 6 + [0.001] * 2)  # cumulative shares 1/6 … 5/6 below ε = 0.99: five used of eight
    memory = SubspaceMemory()
    memory.update([C], threshold=0.99)
    assert memory.kinds == ["retain"] and memory.bases[0].shape == (8, 3) and memory.dimension(0) == 5
    N = memory.bases[0]
    assert torch.allclose(N.T @ memory.bases[0], torch.eye(3, dtype=torch.float64), atol=1e-9)
    # the free part of C is what the five used directions leave: the sixth direction and the two small ones
    used = torch.eye(8, dtype=torch.float64) - N @ N.T
    assert torch.allclose(memory.residual(C, 0), C - used @ C, atol=1e-9)
    free_sixth = Q[:, 5] - used @ Q[:, 5]
    C1 = torch.outer(free_sixth, free_sixth) * 2.0 + Q[:, 6:] @ Q[:, 6:].T * 0.001
    memory.update([C1], threshold=0.99)  # experience 1 uses one of the free directions
    assert memory.kinds == ["retain"] and memory.bases[0].shape == (8, 2) and memory.dimension(0) == 6
    assert (memory.bases[0].T @ free_sixth).norm() < 1e-9  # that direction is no longer free


def test_the_threshold_schedule_and_the_state_round_trip():
    assert SubspaceMemory.threshold(0.95, 1.0, 0, 10) == 0.95
    assert SubspaceMemory.threshold(0.95, 1.0, 5, 10) == pytest.approx(0.975)
    C, _ = spectrum([3.0, 1.0, 0.1, 0.1])
    memory = SubspaceMemory()
    memory.update([C, C], threshold=0.9)
    again = SubspaceMemory("plain")
    again.load_state_dict(memory.state_dict())
    assert again.energy == "squared" and again.kinds == memory.kinds
    assert all(torch.equal(a, b) for a, b in zip(again.bases, memory.bases))
    with pytest.raises(ClpeftError, match="energy must be one of"):
        SubspaceMemory("cubed")
