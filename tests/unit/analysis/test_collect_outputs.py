"""The analysis shows the labels a generator made in training."""

import torch
from torch.utils.data import TensorDataset

from maxl.analysis.visualise import collect_outputs
from maxl.nn import FeatureLabelGenerator, MultiTaskNetwork, tiny_cnn


def setup():
    torch.manual_seed(0)
    net = MultiTaskNetwork(tiny_cnn(1), 2, 5, hidden=4)
    for m in net.backbone.modules():  # running statistics unlike any batch's
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
    x, y = torch.randn(8, 1, 8, 8), torch.tensor([0, 1, 0, 1, 1, 0, 0, 1])
    return net, x, y, TensorDataset(x, y, torch.arange(8))


def test_a_feature_generator_with_batch_statistics_is_shown_with_batch_statistics():
    net, x, y, data = setup()
    gen = FeatureLabelGenerator(net.backbone, [2, 3], hidden=4)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    out = collect_outputs(net, gen, data, batch_size=4)
    net.train()  # what the generator made in training: each batch of 4 with its own statistics
    expected = torch.cat([gen(x[:4], y[:4]), gen(x[4:], y[4:])])
    torch.testing.assert_close(torch.as_tensor(out.soft_labels), expected.detach())
    net.eval()
    assert not torch.allclose(torch.as_tensor(out.soft_labels), gen(x, y).detach(), atol=1e-3)  # not eval mode
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    torch.testing.assert_close(torch.as_tensor(out.features), net.backbone(x).detach())  # the net in eval mode


def test_a_feature_generator_with_running_statistics_is_shown_in_eval_mode():
    net, x, y, data = setup()
    gen = FeatureLabelGenerator(net.backbone, [2, 3], hidden=4, running_statistics=True)
    out = collect_outputs(net, gen, data, batch_size=4)
    net.eval()
    torch.testing.assert_close(torch.as_tensor(out.soft_labels), gen(x, y).detach())
