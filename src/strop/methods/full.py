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
    """The backbone's biases and the whole task head train; every other weight keeps its pretrained value."""

    def prepare(self, model: nn.Module) -> None:
        for name, p in model.body.named_parameters():
            p.requires_grad_(name.endswith("bias"))
        for p in model.head.parameters():
            p.requires_grad_(True)
        freeze_bottom(model, self.cfg.freeze_layers)
