"""Tests of maxl.data.cifar100: the hierarchy tables, ψ and MAXL's block layout of auxiliary labels."""

import itertools

import pytest
import torch

from maxl.data import cifar100 as c

# The fine -> coarse map as published with the data set (the `coarse_labels` of every sample
# follow it); typed here independently of the by-name derivation in maxl.data.cifar100.
PUBLISHED_COARSE_OF_FINE = [
    4, 1, 14, 8, 0, 6, 7, 7, 18, 3, 3, 14, 9, 18, 7, 11, 3, 9, 7, 11,
    6, 11, 5, 10, 7, 6, 13, 15, 3, 15, 0, 11, 1, 10, 12, 14, 16, 9, 11, 5,
    5, 19, 8, 8, 15, 13, 14, 17, 18, 10, 16, 4, 17, 4, 2, 0, 17, 4, 18, 17,
    10, 3, 2, 12, 12, 16, 12, 1, 9, 19, 2, 10, 0, 1, 16, 12, 9, 13, 15, 13,
    16, 19, 2, 4, 6, 19, 5, 5, 8, 19, 18, 1, 2, 15, 6, 0, 17, 8, 14, 13,
]  # fmt: skip
PAIRS = [(p, a) for p, a in itertools.combinations(c.LEVELS, 2)]
# Typed here from the paper's tables (maxl-facts), independently of maxl.data.cifar100: the 20
# superclass names in coarse-label order, and the paper's 20 -> 10 and 10 -> 3 groupings by index.
PUBLISHED_COARSE_NAMES = [
    "aquatic_mammals", "fish", "flowers", "food_containers", "fruit_and_vegetables",
    "household_electrical_devices", "household_furniture", "insects", "large_carnivores",
    "large_man-made_outdoor_things", "large_natural_outdoor_scenes", "large_omnivores_and_herbivores",
    "medium_mammals", "non-insect_invertebrates", "people", "reptiles", "small_mammals", "trees",
    "vehicles_1", "vehicles_2",
]  # fmt: skip
PAPER_TEN_OF_COARSE = {
    0: 1,
    1: 2,
    2: 5,
    3: 6,
    4: 5,
    5: 6,
    6: 6,
    7: 3,
    8: 0,
    9: 7,
    10: 8,
    11: 0,
    12: 1,
    13: 3,
    14: 4,
    15: 0,
    16: 2,
    17: 5,
    18: 9,
    19: 9,
}
PAPER_THREE_OF_TEN = {0: 0, 1: 0, 2: 0, 3: 0, 4: 0, 5: 1, 6: 2, 7: 2, 8: 2, 9: 2}


def block_bounds(psi):
    ends = torch.tensor(psi).cumsum(0)
    return ends - torch.tensor(psi), ends  # block i is [start[i], end[i])


def test_tables():
    assert len(c.FINE_NAMES) == 100 and len(set(c.FINE_NAMES)) == 100
    assert list(c.FINE_NAMES) == sorted(c.FINE_NAMES)
    assert c.FINE_NAMES[:3] == ("apple", "aquarium_fish", "baby") and c.FINE_NAMES[-1] == "worm"
    assert len(c.COARSE_NAMES) == 20 and c.COARSE_NAMES[0] == "aquatic_mammals"
    assert list(c.COARSE_OF_FINE) == PUBLISHED_COARSE_OF_FINE
    assert len(c.TEN_OF_COARSE) == 20 and sorted(set(c.TEN_OF_COARSE)) == list(range(10))
    assert len(c.THREE_OF_TEN) == 10 and sorted(set(c.THREE_OF_TEN)) == list(range(3))
    assert len(c.TEN_NAMES) == 10 and len(c.THREE_NAMES) == 3
    for level in c.LEVELS:
        assert len(c.level_names(level)) == level


@pytest.mark.parametrize(
    "primary, aux, psi",
    [
        (20, 100, [5] * 20),
        (3, 10, [5, 1, 4]),
        (3, 20, [10, 3, 7]),
        (10, 20, [3, 2, 2, 2, 1, 3, 3, 1, 1, 2]),
        (3, 100, [50, 15, 35]),
    ],
)
def test_psi_between(primary, aux, psi):
    assert c.psi_between(primary, aux) == psi


def test_level_map_composes_one_step_maps():
    assert c.level_map(100, 20) == list(c.COARSE_OF_FINE)
    assert c.level_map(20, 10) == list(c.TEN_OF_COARSE)
    assert c.level_map(10, 3) == list(c.THREE_OF_TEN)
    assert c.level_map(100, 3) == [c.THREE_OF_TEN[c.TEN_OF_COARSE[k]] for k in c.COARSE_OF_FINE]
    fine = torch.arange(100)
    for level in c.LEVELS:
        labels = c.level_labels(fine, level)
        assert labels.dtype == torch.int64 and labels.shape == (100,)
        assert labels.unique().tolist() == list(range(level))


@pytest.mark.parametrize(
    "fine, coarse, bad", [(20, 20, "coarse_level=20"), (10, 20, "coarse_level=20"), (50, 20, "50"), (100, 4, "4")]
)
def test_level_map_rejects_bad_levels(fine, coarse, bad):
    with pytest.raises(ValueError, match=bad):
        c.level_map(fine, coarse)


def test_level_labels_rejects_unknown_level():
    with pytest.raises(ValueError, match="7"):
        c.level_labels(torch.arange(3), 7)


@pytest.mark.parametrize("primary_level, aux_level", PAIRS)
def test_hierarchical_aux_labels_lie_in_their_primary_block(primary_level, aux_level):
    fine = torch.arange(100).repeat(2)
    primary, aux = c.hierarchical_aux_labels(fine, primary_level, aux_level)
    psi = c.psi_between(primary_level, aux_level)
    start, end = block_bounds(psi)
    assert primary.dtype == aux.dtype == torch.int64
    assert torch.equal(primary, c.level_labels(fine, primary_level))
    assert ((start[primary] <= aux) & (aux < end[primary])).all()
    assert aux.unique().tolist() == list(range(aux_level))  # every slot used: a bijection of classes
    # the slot names name the sample's own class at the auxiliary level
    names = c.aux_class_names(primary_level, aux_level)
    aux_level_names = c.level_names(aux_level)
    own = c.level_labels(fine, aux_level)
    assert [names[a] for a in aux.tolist()] == [aux_level_names[k] for k in own.tolist()]


def test_aux_class_names_20_100_start_with_aquatic_mammals():
    names = c.aux_class_names(20, 100)
    assert names[:5] == ["beaver", "dolphin", "otter", "seal", "whale"]
    assert names[5:10] == ["aquarium_fish", "flatfish", "ray", "shark", "trout"]
    assert sorted(names) == list(c.FINE_NAMES)


def test_grouped_labels_generic():
    parent_of = [2, 0, 1, 0, 2, 2]  # psi = [2, 1, 3]
    primary, aux, psi = c.grouped_labels(torch.arange(6), parent_of)
    assert psi == [2, 1, 3]
    assert primary.tolist() == parent_of
    assert aux.tolist() == [3, 0, 2, 1, 4, 5]
    assert c.block_order(parent_of) == [1, 3, 2, 0, 4, 5]


def test_grouped_labels_errors():
    with pytest.raises(ValueError, match="no child"):
        c.grouped_labels(torch.arange(2), [0, 2])
    with pytest.raises(ValueError, match="0..2"):
        c.grouped_labels(torch.tensor([0, 3]), [0, 0, 1])


def test_animal_vehicle():
    labels = torch.arange(10)
    primary, aux, psi, names = c.animal_vehicle_labels(labels)
    assert psi == [6, 4]
    assert [c.ANIMAL_VEHICLE_NAMES[p] for p in primary.tolist()] == [
        "vehicle", "vehicle", "animal", "animal", "animal", "animal", "animal", "animal", "vehicle", "vehicle",
    ]  # fmt: skip
    assert names == ["bird", "cat", "deer", "dog", "frog", "horse", "airplane", "automobile", "ship", "truck"]
    assert [names[a] for a in aux.tolist()] == list(c.CIFAR10_NAMES)
    start, end = block_bounds(psi)
    assert ((start[primary] <= aux) & (aux < end[primary])).all()


def paper_ancestor(fine: int, level: int) -> int:
    """Class index at ``level`` of fine class ``fine``, from the tables typed in this file."""
    coarse = PUBLISHED_COARSE_OF_FINE[fine]
    return {100: fine, 20: coarse, 10: PAPER_TEN_OF_COARSE[coarse], 3: PAPER_THREE_OF_TEN[PAPER_TEN_OF_COARSE[coarse]]}[
        level
    ]


@pytest.mark.parametrize("primary_level, aux_level", PAIRS)
def test_human_labels_match_the_paper_tables_for_every_level_pair(primary_level, aux_level):
    """For each fine class, the primary label and the auxiliary slot (and their names) are its
    ancestors at the two levels according to the paper's tables."""
    fine = torch.arange(100)
    primary, aux = c.hierarchical_aux_labels(fine, primary_level, aux_level)
    slot_names = c.aux_class_names(primary_level, aux_level)
    start, end = block_bounds(c.psi_between(primary_level, aux_level))
    for k in range(100):
        p, a = int(primary[k]), int(aux[k])
        assert p == paper_ancestor(k, primary_level)
        assert start[p] <= a < end[p]
        expected_aux = paper_ancestor(k, aux_level)  # index at the auxiliary level, named by slot_names[a]
        assert slot_names[a] == c.level_names(aux_level)[expected_aux]
        if aux_level == 100:
            assert slot_names[a] == c.FINE_NAMES[k]
        if aux_level == 20:
            assert slot_names[a] == PUBLISHED_COARSE_NAMES[PUBLISHED_COARSE_OF_FINE[k]]
        if primary_level == 20:
            assert c.level_names(20)[p] == PUBLISHED_COARSE_NAMES[PUBLISHED_COARSE_OF_FINE[k]]
    # every slot of block i belongs to primary class i: slot names are descendants of their block's class
    for i in range(primary_level):
        members = {slot_names[j] for j in range(int(start[i]), int(end[i]))}
        expected = {
            c.level_names(aux_level)[paper_ancestor(k, aux_level)]
            for k in range(100)
            if paper_ancestor(k, primary_level) == i
        }
        assert members == expected


def test_group_names_describe_their_members():
    """maxl's own names of the 10 and 3 groups agree with the paper's groupings."""
    ten = {PUBLISHED_COARSE_NAMES[k]: c.TEN_NAMES[g] for k, g in PAPER_TEN_OF_COARSE.items()}
    assert ten["vehicles_1"] == ten["vehicles_2"] == "vehicles"
    assert ten["people"] == "people" and ten["trees"] == ten["flowers"] == "plants"
    assert ten["insects"] == ten["non-insect_invertebrates"] == "invertebrates"
    assert [c.THREE_NAMES[PAPER_THREE_OF_TEN[g]] for g in (0, 5, 9)] == ["animals", "plants", "objects_and_scenes"]
