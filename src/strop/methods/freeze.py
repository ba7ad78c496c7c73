"""Frozen backbones: the pretrained encoder stays as it is and only a head on its features trains.

`freeze` trains the model's whole sequence-classification head (for BERT: the pooler's dense + tanh on
the [CLS] vector, and the output layer). `linear_probe` trains only the output layer, a linear map of
the frozen [CLS] representation (Alain & Bengio 2016, "linear classifier probes").

For BERT-family classifiers both methods cache the frozen body's outputs: the body runs once over the data
(in eval mode, so without dropout, and its outputs do not change) and each epoch trains only the head on
them. Other architectures run the whole model every step, with the same result, only slower.
"""

from __future__ import annotations

from torch import nn

from strop.methods.base import METHODS, FrozenSplit, Method


def _encoder(model: nn.Module) -> nn.Module:
    """The pretrained body of a transformers model (e.g. model.bert for BertForSequenceClassification)."""
    return model.base_model


def output_layer(model: nn.Module) -> nn.Linear:
    """The last linear layer outside the encoder whose outputs are the logits."""
    encoder_params = {id(p) for p in _encoder(model).parameters()}
    candidates = [m for m in model.modules()
                  if isinstance(m, nn.Linear) and id(m.weight) not in encoder_params
                  and m.out_features == model.config.num_labels]
    if not candidates:
        raise ValueError(f"{type(model).__name__} has no linear output layer outside its encoder")
    return candidates[-1]


class BertHead(nn.Module):
    """The head of a BertForSequenceClassification (pooler if it trains, dropout, output layer), run on
    cached body outputs. It holds the model's own modules, not copies."""

    def __init__(self, model: nn.Module, with_pooler: bool):
        super().__init__()
        self.pooler = model.bert.pooler if with_pooler else None
        self.dropout, self.classifier = model.dropout, model.classifier

    def forward(self, features):
        # features: (batch, 1, hidden) [CLS] states when the pooler trains, else (batch, hidden) pooler outputs
        from transformers.modeling_outputs import SequenceClassifierOutput

        pooled = features if self.pooler is None else self.pooler(features)
        return SequenceClassifierOutput(logits=self.classifier(self.dropout(pooled)))


def bert_split(model: nn.Module, with_pooler: bool) -> FrozenSplit | None:
    """Body/head split of a BERT classifier, the layout of the bundled model; None for other layouts."""
    from transformers import BertForSequenceClassification

    if not isinstance(model, BertForSequenceClassification) or model.bert.pooler is None:
        return None

    def features(batch):
        out = model.bert(**batch)
        # The pooler reads only the [CLS] position: keep (batch, 1, hidden), not every token.
        return out.last_hidden_state[:, :1] if with_pooler else out.pooler_output

    return FrozenSplit(features, BertHead(model, with_pooler))


@METHODS.register("freeze")
class Freeze(Method):
    """Frozen encoder body; the sequence-classification head (pooler included, if the model has one) trains."""

    trains_body = False

    def prepare(self, model: nn.Module) -> None:
        encoder = _encoder(model)
        for p in encoder.parameters():
            p.requires_grad_(False)
        pooler = getattr(encoder, "pooler", None)
        if pooler is not None:
            for p in pooler.parameters():
                p.requires_grad_(True)

    def train_mode(self, model: nn.Module) -> None:
        # Frozen layers run in eval mode: no dropout noise in features that cannot adapt to it.
        model.train()
        encoder = _encoder(model)
        encoder.eval()
        pooler = getattr(encoder, "pooler", None)
        if pooler is not None:
            pooler.train()

    def frozen_split(self, model: nn.Module) -> FrozenSplit | None:
        return bert_split(model, with_pooler=True)


@METHODS.register("linear_probe")
class LinearProbe(Method):
    """Everything frozen except the output layer: a linear classifier on frozen [CLS] features."""

    trains_body = False

    def prepare(self, model: nn.Module) -> None:
        for p in model.parameters():
            p.requires_grad_(False)
        for p in output_layer(model).parameters():
            p.requires_grad_(True)

    def train_mode(self, model: nn.Module) -> None:
        model.train()
        _encoder(model).eval()

    def frozen_split(self, model: nn.Module) -> FrozenSplit | None:
        return bert_split(model, with_pooler=False)
