"""The learner finds its backbone's feature size: timm's ``num_features`` (emulated; timm is not
a dependency), ``feature_dim`` / ``out_features``, an explicit ``feature_dim=``, or a dry forward
(:meth:`AuxiliaryLearner.materialize`) that leaves modes and BatchNorm statistics as they were;
and the errors when none of that works."""

import pytest
import torch
from torch import nn

from auxtasks import AuxiliaryLearner, Colourisation, LazyHeadsWarning, Rotation, Uncertainty, feature_size_of


class TimmLikeResNet(nn.Module):
    """What ``timm.create_model("resnet18", num_classes=0)`` looks like to the learner: pooled
    features ``[B, num_features]``, a ``num_features`` attribute, no ``out_features``."""

    def __init__(self, num_features=24):
        super().__init__()
        self.num_features = num_features
        self.conv1 = nn.Conv2d(3, num_features, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(num_features)
        self.global_pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())

    def forward(self, x):
        return self.global_pool(torch.relu(self.bn1(self.conv1(x))))


def plain_backbone(width=16):
    """No size attribute at all: conv, BatchNorm, pooling, flatten."""
    return nn.Sequential(
        nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()
    )


def rgb_batch(n=4, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, 8, 8, generator=gen), torch.randint(0, 3, (n,), generator=gen)


def tasks():
    return [Rotation("random", hidden=8), Colourisation(target_size=4, width=16)]


def head_inputs(model):
    """The input size of each task's head: its first Linear layer's in_features."""
    return {t.name: next(m for m in t.head.modules() if isinstance(m, nn.Linear)).in_features for t in model.tasks}


def test_a_timm_like_backbone_tells_its_size_by_num_features():
    torch.manual_seed(0)
    model = AuxiliaryLearner(TimmLikeResNet(24), nn.Linear(24, 3), tasks(), Uncertainty())
    assert model.feature_dim == 24 and model.pending_tasks == ()
    assert head_inputs(model) == {"rotation": 24, "colourisation": 24}
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = rgb_batch()
    out = model(x, y)
    opt.zero_grad()
    model.backward(out)
    opt.step()
    assert set(out.losses) == {"primary", "rotation", "colourisation"}


def test_size_attributes_are_read_in_order_and_feature_dim_overrides_them():
    backbone = TimmLikeResNet(24)
    backbone.out_features = 99  # num_features (timm) comes first
    assert feature_size_of(backbone) == 24
    assert feature_size_of(nn.Linear(5, 7)) == 7
    backbone = plain_backbone()
    backbone.feature_dim = 16
    assert feature_size_of(backbone) == 16
    backbone.num_features = True  # not a size
    assert feature_size_of(backbone) == 16
    assert feature_size_of(plain_backbone()) is None
    model = AuxiliaryLearner(plain_backbone(16), nn.Linear(16, 3), tasks(), feature_dim=16)
    assert model.pending_tasks == () and head_inputs(model) == {"rotation": 16, "colourisation": 16}
    model = AuxiliaryLearner(TimmLikeResNet(24), nn.Linear(24, 3), [Rotation(hidden=8)], feature_dim=12)
    assert head_inputs(model) == {"rotation": 12}
    with pytest.raises(ValueError, match="gives features of size 24, but the heads were built for 12"):
        model.materialize(rgb_batch()[0])
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="feature_dim must be a positive int"):
            AuxiliaryLearner(plain_backbone(), nn.Linear(16, 3), [Rotation()], feature_dim=bad)


def test_materialize_infers_the_size_without_touching_batchnorm_or_modes():
    torch.manual_seed(0)
    backbone = plain_backbone(16)
    model = AuxiliaryLearner(backbone, nn.Linear(16, 3), tasks(), Uncertainty())
    assert model.feature_dim is None and model.pending_tasks == ("rotation", "colourisation")
    with pytest.raises(
        ValueError,
        match=r"network_parameters\(\) needs the heads of tasks \['rotation', "
        r"'colourisation'\].*materialize\(example_images\)",
    ):
        model.network_parameters()
    bn = backbone[1]
    x, y = rgb_batch(6)
    model.train()
    bn.eval()  # a mixed state (a frozen BatchNorm in a training model) comes back as it was
    bn.running_mean.fill_(0.5)
    stats = {k: v.clone() for k, v in bn.state_dict().items()}
    assert model.materialize((x, y)) == 16  # a loader's batch: the images are its first element
    assert model.pending_tasks == () and model.feature_dim == 16
    assert head_inputs(model) == {"rotation": 16, "colourisation": 16}
    assert model.training and backbone.training and backbone[0].training and not bn.training
    for k, v in bn.state_dict().items():
        assert torch.equal(v, stats[k]), k
    bn.train()
    model.materialize(x)  # all heads built: only checks the size; still no change of statistics
    assert bn.training
    for k, v in bn.state_dict().items():
        assert torch.equal(v, stats[k]), k
    # the optimiser made now holds the new heads, and a step trains them
    names = {n for n, _ in model.named_parameters()}
    assert any(n.startswith("tasks.0.head.") for n in names) and any(n.startswith("tasks.1.head.") for n in names)
    assert len(model.network_parameters()) == len(list(model.parameters()))
    opt = torch.optim.SGD(model.network_parameters(), lr=0.1)
    before = [p.detach().clone() for t in model.tasks for p in t.head.parameters()]
    out = model(x, y)
    opt.zero_grad()
    model.backward(out)
    opt.step()
    after = [p.detach() for t in model.tasks for p in t.head.parameters()]
    assert all(not torch.equal(a, b) for a, b in zip(before, after))


def test_heads_are_built_at_the_first_batch_with_a_warning_in_the_backbones_dtype():
    torch.manual_seed(0)
    model = AuxiliaryLearner(plain_backbone(16).double(), nn.Linear(16, 3).double(), [Rotation("random", hidden=8)])
    x, y = rgb_batch()
    with pytest.warns(
        LazyHeadsWarning,
        match=r"\['rotation'\] for features of size 16 at the first batch.*"
        r"materialize\(example_images\) before making the optimiser",
    ):
        out = model(x.double(), y)
    assert head_inputs(model) == {"rotation": 16}
    assert all(p.dtype == torch.float64 for p in model.tasks[0].head.parameters())
    assert torch.isfinite(out.loss)


def test_a_task_with_its_own_head_needs_no_size():
    model = AuxiliaryLearner(plain_backbone(16), nn.Linear(16, 3), [Rotation(head=nn.Linear(16, 4))])
    assert model.pending_tasks == () and model.feature_dim is None
    model.network_parameters()


def test_a_backbone_that_cannot_run_the_batch_names_the_ways_out():
    backbone = nn.Sequential(nn.Flatten(), nn.BatchNorm1d(10), nn.Linear(10, 4))  # wants 10 inputs, gets 192
    model = AuxiliaryLearner(backbone, nn.Linear(4, 3), [Rotation(hidden=8)])
    x, y = rgb_batch()
    model.train()
    message = (
        r"cannot tell the feature size of backbone Sequential: its forward on a batch of shape "
        r"\(4, 3, 8, 8\) failed \(RuntimeError: .*\)\. Give it a `num_features` / `feature_dim` / "
        r"`out_features` attribute, pass feature_dim=, or call learner.materialize\(images\)"
    )
    with pytest.raises(ValueError, match=message):
        model.materialize(x)
    assert backbone.training and backbone[1].training  # the mode came back after the failure
    with pytest.raises(ValueError, match=message):
        model(x, y)  # the first batch tries the same and says the same
    model = AuxiliaryLearner(nn.Conv2d(3, 5, 3, padding=1), nn.Linear(5, 3), [Rotation(hidden=8)])
    with pytest.raises(
        ValueError,
        match=r"backbone Conv2d: its output on a batch of shape \(4, 3, 8, 8\) is "
        r"\(4, 5, 8, 8\), not features \[B, F\]",
    ):
        model.materialize(x)
    with pytest.raises(ValueError, match="needs a batch of images"):
        model.materialize([1, 2])
    assert model.pending_tasks == ("rotation",)
