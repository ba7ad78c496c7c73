import pytest

from strop.config import OptimConfig
from strop.train.optim import build_optimizer, head_parameters, resolve_lr


def test_auto_learning_rate_is_5e5_from_160_steps_and_at_most_4x_below():
    assert resolve_lr("auto", 315) == 5e-5  # 1,000 texts, batch 16, 5 epochs
    assert resolve_lr("auto", 160) == 5e-5
    assert resolve_lr("auto", 80) == pytest.approx(1e-4)
    assert resolve_lr("auto", 20) == pytest.approx(2e-4)  # 64 texts: capped at 4x
    assert resolve_lr("auto", 1) == pytest.approx(2e-4)
    assert resolve_lr(3e-5, 20) == 3e-5  # a number is used as it is


def _tiny_classifier():
    from transformers import BertConfig, BertForSequenceClassification

    return BertForSequenceClassification(BertConfig(vocab_size=50, hidden_size=8, num_hidden_layers=1,
                                                    num_attention_heads=2, intermediate_size=16, num_labels=3))


def _rates(optimizer) -> dict[int, tuple[float, float]]:
    """Each parameter's (peak rate, weight decay), by id (a scheduler keeps the peak as initial_lr)."""
    return {id(p): (g.get("initial_lr", g["lr"]), g["weight_decay"]) for g in optimizer.param_groups for p in g["params"]}


def test_the_new_head_trains_at_head_lr_scale_times_the_rate_of_the_pretrained_body():
    model = _tiny_classifier()
    head = head_parameters(model)
    assert head == {id(model.classifier.weight), id(model.classifier.bias)}  # the pooler was pretrained
    rates = _rates(build_optimizer(model, OptimConfig(head_lr_scale=20.0, weight_decay=0.01), 5e-5, head))
    assert len(rates) == len(list(model.parameters()))
    assert rates[id(model.classifier.weight)] == (pytest.approx(1e-3), 0.01)
    assert rates[id(model.classifier.bias)] == (pytest.approx(1e-3), 0.0)
    assert rates[id(model.bert.pooler.dense.weight)] == (5e-5, 0.01)
    assert rates[id(model.bert.embeddings.LayerNorm.weight)] == (5e-5, 0.0)
    # A module without a pretrained body and a head (here the bare encoder) trains at one rate.
    assert head_parameters(model.bert) == set()


def test_fit_gives_the_head_its_own_rate_where_the_body_trains_too(tiny_overrides, tmp_path, monkeypatch):
    import strop
    from strop.train import loop

    built = []

    def recording(*args, **kwargs):
        built.append(build_optimizer(*args, **kwargs))
        return built[-1]

    monkeypatch.setattr(loop, "build_optimizer", recording)
    strop.fit(None, tiny_overrides + ["train.epochs=1", "optim.head_lr_scale=5"])
    rates = sorted({lr for lr, _ in _rates(built[0]).values()})
    assert rates == [pytest.approx(1e-3), pytest.approx(5e-3)]  # optim.lr=1e-3 in tiny_overrides
    # With the body frozen, the head is all that trains, and optim.lr is its rate.
    strop.fit(None, tiny_overrides + ["train.epochs=1", "optim.head_lr_scale=5", "method.name=freeze",
                                      f"output_dir={tmp_path / 'frozen'}"])
    assert sorted({lr for lr, _ in _rates(built[1]).values()}) == [pytest.approx(1e-3)]
