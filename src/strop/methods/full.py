"""Full fine-tuning: every parameter of backbone and head trains (Howard & Ruder 2018; Devlin et al. 2019)."""

from strop.methods.base import METHODS, Method


@METHODS.register("full")
class Full(Method):
    pass
