"""Metrics against a hand-computed matrix, and against Avalanche's own metrics on the same run."""
import numpy as np
import pytest

from clpeft.evaluation import metrics as M

R = [[0.9, 0.0, 0.0],
     [0.6, 0.8, 0.0],
     [0.5, 0.7, 0.95]]
N = [100, 100, 200]


def test_metrics_by_hand():
    a = M.accuracy_after_each(R, N)
    assert a == pytest.approx([0.9, 0.7, (50 + 70 + 190) / 400])
    assert M.final_accuracy(R, N) == pytest.approx(310 / 400)
    assert M.average_incremental_accuracy(R, N) == pytest.approx((0.9 + 0.7 + 0.775) / 3)
    # max-previous − last: exp0 max(0.9,0.6)-0.5 = 0.4, exp1 0.8-0.7 = 0.1
    assert M.forgetting_max(R) == pytest.approx(0.25)
    # after-learning − last: the same here; differs when accuracy rises after learning
    assert M.forgetting_after_learning(R) == pytest.approx(0.25)
    assert M.backward_transfer(R) == pytest.approx(-0.25)
    assert M.forward_transfer(R, [0.0, 0.0, 0.0]) == pytest.approx(0.0)
    assert M.forward_transfer([[1, 0.2], [1, 1]], [0, 0.1]) == pytest.approx(0.1)


def test_the_two_forgetting_definitions_differ_when_accuracy_recovers():
    R2 = [[0.5, 0, 0], [0.9, 0.8, 0], [0.6, 0.8, 1.0]]
    assert M.forgetting_max(R2) == pytest.approx(((0.9 - 0.6) + 0.0) / 2)
    assert M.forgetting_after_learning(R2) == pytest.approx(((0.5 - 0.6) + 0.0) / 2)
    assert M.per_experience_forgetting(R2, "max") == pytest.approx([0.3, 0.0])


def test_single_experience_and_bad_shapes():
    assert M.forgetting_max([[0.7]]) == 0.0 and M.backward_transfer([[0.7]]) == 0.0
    with pytest.raises(ValueError):
        M.final_accuracy([[1, 2, 3]])


def test_our_matrix_matches_avalanche_metrics_on_the_same_run(fast_scenario):
    """Avalanche's EvaluationPlugin watches the same strategy; after each experience it evaluates the
    test stream itself. Its per-experience accuracy, stream forgetting and BWT must equal ours."""
    from avalanche.evaluation.metrics import accuracy_metrics, bwt_metrics, forgetting_metrics
    from avalanche.training.plugins import EvaluationPlugin

    from clpeft.config import resolve
    from clpeft.run import run

    evaluator = EvaluationPlugin(accuracy_metrics(experience=True, stream=True),
                                 forgetting_metrics(experience=True, stream=True),
                                 bwt_metrics(experience=True, stream=True), loggers=[])
    theirs = []

    def after(i, strategy, stream):
        strategy.eval(stream.test_stream[: i + 1])
        theirs.append(dict(evaluator.get_last_metrics()))

    config = resolve(fast_scenario, strategy="finetune", seed=0)
    ours = run(config, evaluator=evaluator, after_experience=after)
    R_ours = np.array(ours["accuracy_matrix"])
    for i, metrics in enumerate(theirs):
        for j in range(i + 1):
            key = f"Top1_Acc_Exp/eval_phase/test_stream/Task000/Exp{j:03d}"
            assert metrics[key] == pytest.approx(R_ours[i, j], abs=1e-9), (i, j)
        assert metrics["Top1_Acc_Stream/eval_phase/test_stream/Task000"] == pytest.approx(
            ours["metrics"]["accuracy_after_each"][i], abs=1e-9)
    last = theirs[-1]
    assert last["StreamForgetting/eval_phase/test_stream"] == pytest.approx(ours["metrics"]["forgetting_after_learning"], abs=1e-9)
    assert last["StreamBWT/eval_phase/test_stream"] == pytest.approx(ours["metrics"]["backward_transfer"], abs=1e-9)
    assert R_ours[1, 0] != R_ours[0, 0]  # the run did move, so the comparison is not trivial
