import pytest

from strop.train.optim import resolve_lr


def test_auto_learning_rate_is_5e5_from_160_steps_and_at_most_4x_below():
    assert resolve_lr("auto", 315) == 5e-5  # 1,000 texts, batch 16, 5 epochs
    assert resolve_lr("auto", 160) == 5e-5
    assert resolve_lr("auto", 80) == pytest.approx(1e-4)
    assert resolve_lr("auto", 20) == pytest.approx(2e-4)  # 64 texts: capped at 4x
    assert resolve_lr("auto", 1) == pytest.approx(2e-4)
    assert resolve_lr(3e-5, 20) == 3e-5  # a number is used as it is
