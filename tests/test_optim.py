import pytest

from strop.config import OptimConfig
from strop.train.optim import build_optimizer, resolve_lr


def test_auto_learning_rate_is_5e5_from_160_steps_and_at_most_4x_below():
    assert resolve_lr("auto", 315) == 5e-5  # 1,000 texts, batch 16, 5 epochs
    assert resolve_lr("auto", 160) == 5e-5
    assert resolve_lr("auto", 80) == pytest.approx(1e-4)
    assert resolve_lr("auto", 20) == pytest.approx(2e-4)  # 64 texts: capped at 4x
    assert resolve_lr("auto", 1) == pytest.approx(2e-4)
    assert resolve_lr(3e-5, 20) == 3e-5  # a number is used as it is


def _tiny_classifier():
    """A TaskModel: a 1-layer BERT body whose pooler feeds a new classification head."""
    from transformers import BertConfig, BertModel

    from strop.backbones.bundled import BUNDLED
    from strop.backbones.text import TextBackbone, load_tokenizer
    from strop.model import with_new_head
    from strop.tasks.classification import Classification

    bert = BertModel(BertConfig(vocab_size=50, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                                intermediate_size=16))
    body = TextBackbone(bert, load_tokenizer(str(BUNDLED.get("minilm-l6")())), "pooler", 32)
    return with_new_head(body, Classification(("a", "b", "c")))


def _rates(optimizer) -> dict[int, tuple[float, float]]:
    """Each parameter's (peak rate, weight decay), by id (a scheduler keeps the peak as initial_lr)."""
    return {id(p): (g.get("initial_lr", g["lr"]), g["weight_decay"]) for g in optimizer.param_groups for p in g["params"]}


def test_the_new_head_trains_at_head_lr_scale_times_the_rate_of_the_pretrained_body():
    model = _tiny_classifier()
    head = model.new_parameters
    assert head == {id(model.head.output.weight), id(model.head.output.bias)}  # the pooler was pretrained
    rates = _rates(build_optimizer(model, OptimConfig(head_lr_scale=20.0, weight_decay=0.01), 5e-5, head))
    assert len(rates) == len(list(model.parameters()))
    assert rates[id(model.head.output.weight)] == (pytest.approx(1e-3), 0.01)
    assert rates[id(model.head.output.bias)] == (pytest.approx(1e-3), 0.0)
    assert rates[id(model.head.pre.dense.weight)] == (5e-5, 0.01)
    assert rates[id(model.body.model.embeddings.LayerNorm.weight)] == (5e-5, 0.0)
    # Without new parameters (a model restored whole) everything trains at one rate.
    assert len({lr for lr, _ in _rates(build_optimizer(model, OptimConfig(), 5e-5, set())).values()}) == 1


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
