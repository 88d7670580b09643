"""PCGrad: project away the part of a task's gradient that conflicts with another's.

For every task i, in a random order over the other tasks j: if g_i · g_j < 0, replace g_i by
its projection onto the normal plane of g_j, g_i ← g_i − (g_i · g_j / ‖g_j‖²) g_j (always
projecting against the *original* g_j). The shared parameters take Σ_i g_i.

torchjd's ``PCGrad`` is the same rule (on the Gramian); this one stays on purpose: it needs no
optional extra, so ``--weighting pcgrad`` works in the base install, and it takes its own random
generator for the projection order. ``tests/unit/auxtasks/test_aggregators.py`` checks that the
two give the same update under the same random orders.

References:
    Yu, Kumar, Gupta, Levine, Hausman, Finn. "Gradient Surgery for Multi-Task Learning".
    NeurIPS 2020, Algorithm 1.
"""

from __future__ import annotations

import torch

from .base import GradientWeighting

__all__ = ["PCGrad"]


class PCGrad(GradientWeighting):
    """Projecting conflicting gradients (Yu et al., NeurIPS 2020), over all tasks including the
    primary one; the heads take their own gradients unchanged.

    Args:
        generator: random generator of the projection order (default: torch's global one).
    """

    def __init__(self, generator: torch.Generator | None = None):
        super().__init__()
        self.generator = generator

    def combine_gradients(self, grads, losses):
        names = self.task_names
        total = torch.zeros_like(grads[names[0]])
        for i in names:
            g = grads[i].clone()
            for j in torch.randperm(len(names), generator=self.generator).tolist():
                other = grads[names[j]]
                if names[j] == i:
                    continue
                dot = g @ other
                if dot < 0:  # conflict: remove the component of g_i along g_j
                    g = g - dot / other.pow(2).sum() * other
            total += g
        return total
