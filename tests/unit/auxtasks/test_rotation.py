"""Rotation: the four rotations, their labels, and the task's head and loss."""

import pytest
import torch

from auxtasks import Rotation, rotate_batch


def test_four_rotations_are_the_four_quarter_turns_and_return_the_original():
    torch.manual_seed(0)
    x = torch.randn(3, 2, 5, 5)
    rotated, labels = rotate_batch(x, "all")
    assert rotated.shape == (12, 2, 5, 5) and labels.dtype == torch.int64
    assert labels.tolist() == [0] * 3 + [1] * 3 + [2] * 3 + [3] * 3
    for k in range(4):
        chunk = rotated[3 * k : 3 * (k + 1)]
        # turning the k-th copy by the remaining (4 - k) quarter turns gives the original back
        assert torch.equal(torch.rot90(chunk, 4 - k, dims=(2, 3)), x)
        # and turning it by another quarter turn gives the next copy
        assert torch.equal(torch.rot90(chunk, 1, dims=(2, 3)), rotated[3 * ((k + 1) % 4) : 3 * ((k + 1) % 4 + 1)])


def test_a_quarter_turn_is_counter_clockwise_by_hand():
    image = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).view(1, 1, 2, 2)
    rotated, labels = rotate_batch(image, "all")
    # 1 2       2 4       4 3       3 1
    # 3 4  ->   1 3  ->   2 1  ->   4 2
    expected = [[[1, 2], [3, 4]], [[2, 4], [1, 3]], [[4, 3], [2, 1]], [[3, 1], [4, 2]]]
    assert rotated.squeeze(1).tolist() == expected and labels.tolist() == [0, 1, 2, 3]


def test_random_mode_rotates_each_image_by_its_label():
    x = torch.randn(64, 3, 4, 4)
    rotated, labels = rotate_batch(x, "random", generator=torch.Generator().manual_seed(1))
    assert rotated.shape == x.shape and labels.shape == (64,)
    assert labels.min() >= 0 and labels.max() <= 3 and len(labels.unique()) == 4
    for b in range(64):
        assert torch.equal(torch.rot90(rotated[b], 4 - int(labels[b]), dims=(1, 2)), x[b])


def test_bad_input_is_rejected():
    with pytest.raises(ValueError, match="square"):
        rotate_batch(torch.zeros(2, 3, 4, 5))
    with pytest.raises(ValueError, match="unknown rotation mode"):
        Rotation(mode="half")


def test_rotation_head_and_loss():
    task = Rotation(hidden=8)
    task.attach(6)
    logits = task(torch.randn(5, 6))
    assert logits.shape == (5, 4)
    target = torch.tensor([0, 1, 2, 3, 1])
    expected = -torch.log_softmax(logits, 1)[torch.arange(5), target].mean()
    torch.testing.assert_close(task.loss(logits, target), expected)
