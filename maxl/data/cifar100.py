"""Class hierarchies of CIFAR-100 (4 levels) and CIFAR-10 (animal / vehicle), and MAXL's block layout.

MAXL gives primary class ``i`` its own ``ψ[i]`` auxiliary classes, laid side by side: the
auxiliary classes of primary class ``i`` are the contiguous block
``sum(ψ[:i]) .. sum(ψ[:i+1]) - 1`` (Liu, Davison & Johns, 2019, Sec. 3.2, the hierarchy mask
M). The "human" baseline of the paper uses a real class hierarchy in this layout: for
CIFAR-100 the 20 superclasses as primary task and the 100 fine classes as auxiliary task
(ψ = [5] * 20). :func:`grouped_labels` re-indexes any child -> parent grouping into that layout;
the rest of the module is the hierarchy data.

CIFAR-100 has four levels, 100 fine -> 20 coarse -> 10 -> 3. The 100 -> 20 table is the data
set's own (Krizhevsky, 2009); the 20 -> 10 and 10 -> 3 groupings are the MAXL paper's. Tables
are written by class name and turned into index maps at import time, so that no index is typed
by hand.

References:
    Liu, Davison, Johns. "Self-Supervised Generalisation with Meta Auxiliary Learning".
    NeurIPS 2019, arXiv:1901.08933.
    Krizhevsky. "Learning Multiple Layers of Features from Tiny Images". Tech. report, 2009.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = [
    "FINE_NAMES",
    "COARSE_NAMES",
    "TEN_NAMES",
    "THREE_NAMES",
    "COARSE_OF_FINE",
    "TEN_OF_COARSE",
    "THREE_OF_TEN",
    "LEVELS",
    "CIFAR10_NAMES",
    "ANIMAL_VEHICLE_NAMES",
    "ANIMAL_VEHICLE_OF_CIFAR10",
    "block_order",
    "psi_of",
    "grouped_labels",
    "level_names",
    "level_map",
    "level_labels",
    "psi_between",
    "hierarchical_aux_labels",
    "aux_class_names",
    "animal_vehicle_labels",
]

# The 20 CIFAR-100 superclasses ("coarse labels") in their index order, each with its 5 fine
# classes (the data set's meta file, Krizhevsky 2009).
_COARSE_TABLE: dict[str, tuple[str, ...]] = {
    "aquatic_mammals": ("beaver", "dolphin", "otter", "seal", "whale"),
    "fish": ("aquarium_fish", "flatfish", "ray", "shark", "trout"),
    "flowers": ("orchid", "poppy", "rose", "sunflower", "tulip"),
    "food_containers": ("bottle", "bowl", "can", "cup", "plate"),
    "fruit_and_vegetables": ("apple", "mushroom", "orange", "pear", "sweet_pepper"),
    "household_electrical_devices": ("clock", "keyboard", "lamp", "telephone", "television"),
    "household_furniture": ("bed", "chair", "couch", "table", "wardrobe"),
    "insects": ("bee", "beetle", "butterfly", "caterpillar", "cockroach"),
    "large_carnivores": ("bear", "leopard", "lion", "tiger", "wolf"),
    "large_man-made_outdoor_things": ("bridge", "castle", "house", "road", "skyscraper"),
    "large_natural_outdoor_scenes": ("cloud", "forest", "mountain", "plain", "sea"),
    "large_omnivores_and_herbivores": ("camel", "cattle", "chimpanzee", "elephant", "kangaroo"),
    "medium_mammals": ("fox", "porcupine", "possum", "raccoon", "skunk"),
    "non-insect_invertebrates": ("crab", "lobster", "snail", "spider", "worm"),
    "people": ("baby", "boy", "girl", "man", "woman"),
    "reptiles": ("crocodile", "dinosaur", "lizard", "snake", "turtle"),
    "small_mammals": ("hamster", "mouse", "rabbit", "shrew", "squirrel"),
    "trees": ("maple_tree", "oak_tree", "palm_tree", "pine_tree", "willow_tree"),
    "vehicles_1": ("bicycle", "bus", "motorcycle", "pickup_truck", "train"),
    "vehicles_2": ("lawn_mower", "rocket", "streetcar", "tank", "tractor"),
}

#: The 100 fine class names; fine label k is ``FINE_NAMES[k]`` (alphabetical, as in the meta file).
FINE_NAMES: tuple[str, ...] = tuple(sorted(n for fines in _COARSE_TABLE.values() for n in fines))
#: The 20 superclass names in coarse-label order.
COARSE_NAMES: tuple[str, ...] = tuple(_COARSE_TABLE)
#: Fine label (100) -> coarse label (20).
COARSE_OF_FINE: tuple[int, ...] = tuple(
    next(c for c, fines in enumerate(_COARSE_TABLE.values()) if name in fines) for name in FINE_NAMES
)

#: Coarse (20) -> 10 groups, the MAXL paper's grouping.
TEN_OF_COARSE: tuple[int, ...] = (1, 2, 5, 6, 5, 6, 6, 3, 0, 7, 8, 0, 1, 3, 4, 0, 2, 5, 9, 9)
#: 10 groups -> 3 groups, the MAXL paper's grouping.
THREE_OF_TEN: tuple[int, ...] = (0, 0, 0, 0, 0, 1, 2, 2, 2, 2)
# The paper gives the 10- and 3-level groupings but no names for them; these short descriptive
# names are maxl's own (the member superclasses are listed to keep them checkable).
#: Names of the 10 groups.
TEN_NAMES: tuple[str, ...] = (
    "large_animals_and_reptiles",  # large_carnivores, large_omnivores_and_herbivores, reptiles
    "aquatic_and_medium_mammals",  # aquatic_mammals, medium_mammals
    "fish_and_small_mammals",  # fish, small_mammals
    "invertebrates",  # insects, non-insect_invertebrates
    "people",
    "plants",  # flowers, fruit_and_vegetables, trees
    "household_objects",  # food_containers, household_electrical_devices, household_furniture
    "man-made_outdoor_things",
    "natural_outdoor_scenes",
    "vehicles",  # vehicles_1, vehicles_2
)
#: Names of the 3 groups.
THREE_NAMES: tuple[str, ...] = ("animals", "plants", "objects_and_scenes")

#: The hierarchy levels of CIFAR-100, coarsest first (number of classes per level).
LEVELS: tuple[int, ...] = (3, 10, 20, 100)
_NAMES_OF_LEVEL = {3: THREE_NAMES, 10: TEN_NAMES, 20: COARSE_NAMES, 100: FINE_NAMES}
# One step up the tree from each level: level -> (parent level, parent index of each class).
_PARENT_STEP = {100: (20, COARSE_OF_FINE), 20: (10, TEN_OF_COARSE), 10: (3, THREE_OF_TEN)}

#: CIFAR-10 class names in label order (alphabetical).
CIFAR10_NAMES: tuple[str, ...] = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip
#: The two primary classes of the CIFAR-10 animal / vehicle hierarchy.
ANIMAL_VEHICLE_NAMES: tuple[str, ...] = ("animal", "vehicle")
_ANIMALS = ("bird", "cat", "deer", "dog", "frog", "horse")
#: CIFAR-10 label -> 0 (animal) or 1 (vehicle); ψ = [6, 4].
ANIMAL_VEHICLE_OF_CIFAR10: tuple[int, ...] = tuple(0 if n in _ANIMALS else 1 for n in CIFAR10_NAMES)


# --------------------------------------------------------------------------- block layout
def psi_of(parent_of: Sequence[int]) -> list[int]:
    """Number of children of each parent: ψ[i] = #{c : parent_of[c] == i}.

    Args:
        parent_of: parent index of each child class; the parents must be 0..P-1, each used.

    Returns:
        ψ, a list of P positive ints summing to ``len(parent_of)``.

    Raises:
        ValueError: if ``parent_of`` is empty or some parent in 0..max has no child.
    """
    if len(parent_of) == 0:
        raise ValueError("parent_of is empty")
    if min(parent_of) < 0:
        raise ValueError(f"parent indices must be >= 0, got {min(parent_of)}")
    psi = [0] * (max(parent_of) + 1)
    for p in parent_of:
        psi[p] += 1
    empty = [i for i, n in enumerate(psi) if n == 0]
    if empty:
        raise ValueError(f"parents {empty} have no child class: every block needs ψ[i] >= 1")
    return psi


def block_order(parent_of: Sequence[int]) -> list[int]:
    """The child classes in MAXL's block order: sorted by parent, then by their own index.

    Args:
        parent_of: parent index of each child class.

    Returns:
        ``order`` with ``order[j]`` = the child class at block position ``j``; the children of
        parent ``i`` sit at positions ``sum(ψ[:i]) .. sum(ψ[:i+1]) - 1``.
    """
    return sorted(range(len(parent_of)), key=lambda c: (parent_of[c], c))


def grouped_labels(labels: Tensor, parent_of: Sequence[int]) -> tuple[Tensor, Tensor, list[int]]:
    """Split child labels into primary (parent) labels and block-ordered auxiliary labels.

    Args:
        labels: int64 [N], child class of each sample, in 0..len(parent_of)-1.
        parent_of: parent (primary) index of each child class.

    Returns:
        ``(primary, aux, psi)``: primary int64 [N] the parent labels; aux int64 [N] the child
        labels re-indexed to block order, so ``aux`` of a sample with primary label ``i`` lies in
        ``sum(psi[:i]) .. sum(psi[:i+1]) - 1``; psi the block sizes (see :func:`psi_of`).

    Raises:
        ValueError: if a label is outside 0..len(parent_of)-1, or via :func:`psi_of`.
    """
    psi = psi_of(parent_of)
    labels = torch.as_tensor(labels, dtype=torch.int64)
    if labels.numel() and (labels.min() < 0 or labels.max() >= len(parent_of)):
        raise ValueError(f"labels must lie in 0..{len(parent_of) - 1}, got {labels.min()}..{labels.max()}")
    position = torch.empty(len(parent_of), dtype=torch.int64)
    position[torch.tensor(block_order(parent_of))] = torch.arange(len(parent_of))  # class -> slot
    return torch.tensor(parent_of, dtype=torch.int64)[labels], position[labels], psi


# --------------------------------------------------------------------------- CIFAR-100 levels
def _check_level(level: int, what: str) -> None:
    if level not in LEVELS:
        raise ValueError(f"{what} must be one of {LEVELS}, got {level!r}")


def level_names(level: int) -> tuple[str, ...]:
    """Class names of a CIFAR-100 hierarchy level (3, 10, 20 or 100), in label order."""
    _check_level(level, "level")
    return _NAMES_OF_LEVEL[level]


def level_map(fine_level: int, coarse_level: int) -> list[int]:
    """Ancestor at ``coarse_level`` of each class at ``fine_level``.

    Args:
        fine_level: the finer level, one of ``LEVELS``.
        coarse_level: the coarser level, one of ``LEVELS``, strictly smaller than ``fine_level``.

    Returns:
        A list of ``fine_level`` ints in 0..coarse_level-1.

    Raises:
        ValueError: if a level is not in ``LEVELS`` or ``coarse_level >= fine_level``.
    """
    _check_level(fine_level, "fine_level")
    _check_level(coarse_level, "coarse_level")
    if coarse_level >= fine_level:
        raise ValueError(
            f"coarse_level must be coarser (fewer classes) than fine_level, got coarse_level={coarse_level} "
            f"and fine_level={fine_level}"
        )
    ancestor, level = list(range(fine_level)), fine_level
    while level != coarse_level:  # walk up the tree one level at a time
        level, step = _PARENT_STEP[level]
        ancestor = [step[a] for a in ancestor]
    return ancestor


def level_labels(fine_labels: Tensor, level: int) -> Tensor:
    """Map CIFAR-100 fine labels to the labels of any hierarchy level.

    Args:
        fine_labels: int64 [N], fine labels in 0..99.
        level: target level, one of ``LEVELS``.

    Returns:
        int64 [N], labels in 0..level-1 (a copy of ``fine_labels`` for level 100).

    Raises:
        ValueError: if ``level`` is not in ``LEVELS``.
    """
    _check_level(level, "level")
    fine_labels = torch.as_tensor(fine_labels, dtype=torch.int64)
    if level == 100:
        return fine_labels.clone()
    return torch.tensor(level_map(100, level), dtype=torch.int64)[fine_labels]


def psi_between(primary_level: int, aux_level: int) -> list[int]:
    """ψ of the human hierarchy ``primary_level`` -> ``aux_level`` of CIFAR-100.

    ψ[i] is the number of ``aux_level`` classes whose ancestor at ``primary_level`` is ``i``;
    e.g. 20 -> 100 gives ``[5] * 20`` and 3 -> 10 gives ``[5, 1, 4]``.

    Raises:
        ValueError: as :func:`level_map`.
    """
    return psi_of(level_map(aux_level, primary_level))


def hierarchical_aux_labels(fine_labels: Tensor, primary_level: int, aux_level: int) -> tuple[Tensor, Tensor]:
    """Primary and block-ordered human auxiliary labels of CIFAR-100 samples.

    Args:
        fine_labels: int64 [N], fine labels in 0..99.
        primary_level: level of the primary task, one of ``LEVELS``.
        aux_level: level of the auxiliary task, one of ``LEVELS``, finer than ``primary_level``.

    Returns:
        ``(primary, aux)``, int64 [N] each; ``aux`` is the ``aux_level`` class re-indexed so that
        primary class ``i`` owns the block ``sum(ψ[:i]) .. sum(ψ[:i+1]) - 1`` with
        ψ = ``psi_between(primary_level, aux_level)``; :func:`aux_class_names` names the slots.

    Raises:
        ValueError: as :func:`level_map`.
    """
    parent_of = level_map(aux_level, primary_level)
    primary, aux, _ = grouped_labels(level_labels(fine_labels, aux_level), parent_of)
    return primary, aux


def aux_class_names(primary_level: int, aux_level: int) -> list[str]:
    """Names of the auxiliary classes in block order (slot ``j`` of :func:`hierarchical_aux_labels`)."""
    names = level_names(aux_level)
    return [names[c] for c in block_order(level_map(aux_level, primary_level))]


# --------------------------------------------------------------------------- CIFAR-10
def animal_vehicle_labels(labels: Tensor) -> tuple[Tensor, Tensor, list[int], list[str]]:
    """CIFAR-10 labels -> animal / vehicle primary labels and block-ordered 10-class aux labels.

    Args:
        labels: int64 [N], CIFAR-10 labels in 0..9 (order of ``CIFAR10_NAMES``).

    Returns:
        ``(primary, aux, psi, aux_names)``: primary int64 [N] (0 animal, 1 vehicle); aux int64
        [N] in block order (0..5 the animals, 6..9 the vehicles); psi ``[6, 4]``; aux_names the
        class names in block order.
    """
    primary, aux, psi = grouped_labels(labels, ANIMAL_VEHICLE_OF_CIFAR10)
    names = [CIFAR10_NAMES[c] for c in block_order(ANIMAL_VEHICLE_OF_CIFAR10)]
    return primary, aux, psi, names
