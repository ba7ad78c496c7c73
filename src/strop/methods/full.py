"""Full fine-tuning: every parameter of backbone and head trains (Howard & Ruder 2018; Devlin et al. 2019),
or all but the bottom method.freeze_layers layers. BitFit (Ben Zaken et al. 2022) trains only the bias terms
of the backbone, and the task head."""

from torch import nn

from strop.methods.base import METHODS, Method, freeze_bottom


@METHODS.register("full")
class Full(Method):
    pass


@METHODS.register("bitfit")
class BitFit(Method):
    """The backbone's biases and the whole task head train; every other weight keeps its pretrained value.

    Biases alone train like an adapter, at one rate with the head (optim.lr=auto: 1e-3, as the peft methods):
    on 1,000 SST-2 sentences (3 seeds) that scored 0.830 ± 0.009 in 87 s, against 0.818 ± 0.006 in 127 s (all
    10 epochs, still improving) with the biases at the body's fine-tuning rate (5e-5) and the head at 1e-3."""

    body_rate = False

    def prepare(self, model: nn.Module) -> None:
        for name, p in model.body.named_parameters():
            p.requires_grad_(name.endswith("bias"))
        for p in model.head.parameters():
            p.requires_grad_(True)
        freeze_bottom(model, self.cfg.freeze_layers)
