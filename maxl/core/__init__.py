"""The algorithm's building blocks that depend on nothing else of maxl: the hierarchy ψ and
its masked softmax, the losses, the heads."""

from maxl.core.heads import mlp_head
from maxl.core.hierarchy import Hierarchy, masked_log_softmax, masked_softmax, validate_psi
from maxl.core.losses import LOSSES, classification_loss, focal_loss, negative_entropy

__all__ = [
    "mlp_head",
    "Hierarchy",
    "masked_log_softmax",
    "masked_softmax",
    "validate_psi",
    "LOSSES",
    "classification_loss",
    "focal_loss",
    "negative_entropy",
]
