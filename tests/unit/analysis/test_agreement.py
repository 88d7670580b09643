"""Agreement scores against values computed by hand from small contingency tables."""

import math

import numpy as np
import pytest

from maxl.analysis.agreement import agreement_within_primary, contingency_table, mean_agreement, purity

# 6 images: generated clusters 0,0,0,1,1,1; human classes 0,0,1,1,1,1
GEN6 = [0, 0, 0, 1, 1, 1]
HUM6 = [0, 0, 1, 1, 1, 1]


def test_contingency_table_counts_pairs():
    table = contingency_table([0, 0, 1, 1, 2], [0, 1, 1, 1, 0])
    assert table.tolist() == [[1, 1], [0, 2], [1, 0]]
    # empty rows / columns are kept when the size is given
    assert contingency_table([1], [0], num_generated=3, num_human=2).tolist() == [[0, 0], [1, 0], [0, 0]]


def test_purity_by_hand():
    # rows [[1, 1], [0, 2], [1, 0]]: row maxima 1 + 2 + 1 = 4 of 5 images
    assert purity([0, 0, 1, 1, 2], [0, 1, 1, 1, 0]) == pytest.approx(4 / 5)
    # table [[2, 1], [0, 3]]: (2 + 3) / 6
    assert purity(GEN6, HUM6) == pytest.approx(5 / 6)
    # one cluster holding everything: the share of the largest human class
    assert purity([0] * 5, [0, 1, 1, 2, 1]) == pytest.approx(3 / 5)
    # every image its own cluster: 1
    assert purity(range(4), [0, 0, 1, 1]) == 1.0


def test_nmi_and_ari_by_hand():
    results = agreement_within_primary([0] * 6, GEN6, HUM6, [2], [2])
    (r,) = results
    # NMI with arithmetic normalisation: I(G;H) / ((H(G) + H(H)) / 2)
    # p(g,h): (0,0) 2/6, (0,1) 1/6, (1,1) 3/6; p(g) = 1/2, 1/2; p(h) = 1/3, 2/3
    mi = (
        (2 / 6) * math.log((2 / 6) / (1 / 2 * 1 / 3))
        + (1 / 6) * math.log((1 / 6) / (1 / 2 * 2 / 3))
        + (3 / 6) * math.log((3 / 6) / (1 / 2 * 2 / 3))
    )
    h_g = math.log(2)
    h_h = -(1 / 3 * math.log(1 / 3) + 2 / 3 * math.log(2 / 3))
    assert r.nmi == pytest.approx(mi / ((h_g + h_h) / 2), abs=1e-12)
    # ARI: sum C(n_ij, 2) = 1 + 0 + 3 = 4; rows C(3,2)*2 = 6; columns C(2,2) + C(4,2) = 7; C(6,2) = 15
    expected = 6 * 7 / 15
    assert r.ari == pytest.approx((4 - expected) / ((6 + 7) / 2 - expected), abs=1e-12)  # = 12/37
    assert r.ari == pytest.approx(12 / 37)
    assert r.purity == pytest.approx(5 / 6)
    assert r.table.tolist() == [[2, 1], [0, 3]]


def test_independent_labels_score_zero_ari():
    # table [[2, 0], [1, 1]]: sum C(n_ij, 2) = 1 equals its expectation C(2,2)*2 * (C(3,2) + 0) / C(4,2) = 1
    (r,) = agreement_within_primary([0] * 4, [0, 0, 1, 1], [0, 0, 0, 1], [2], [2])
    assert r.ari == pytest.approx(0.0, abs=1e-12)


def test_within_primary_uses_block_local_labels_and_weights_the_mean():
    # primary 0: psi_gen 2, psi_hum 2 (the 6-image example, offset 0);
    # primary 1: psi_gen 3 (columns 2..4), psi_hum 3 (columns 2..4): a perfect relabelling
    primary = [0] * 6 + [1] * 4
    generated = GEN6 + [4, 4, 2, 3]
    human = HUM6 + [2, 2, 3, 4]
    r0, r1 = agreement_within_primary(primary, generated, human, [2, 3], [2, 3])
    assert (r0.num_images, r1.num_images) == (6, 4)
    assert r0.purity == pytest.approx(5 / 6) and r0.ari == pytest.approx(12 / 37)
    assert r1.nmi == pytest.approx(1.0) and r1.ari == pytest.approx(1.0) and r1.purity == 1.0
    assert r1.table.shape == (3, 3) and r1.table.sum() == 4
    mean = mean_agreement([r0, r1])
    assert mean["ari"] == pytest.approx((6 * 12 / 37 + 4 * 1.0) / 10)
    assert mean["purity"] == pytest.approx((6 * 5 / 6 + 4) / 10)
    # chance purity: the same cluster sizes shuffled, never above the best possible 1
    assert 0 < r0.chance_purity <= 1


def test_single_human_class_gives_nan_nmi_ari_and_is_left_out_of_the_mean():
    primary = [0, 0, 0, 1, 1]
    r0, r1 = agreement_within_primary(primary, [0, 1, 1, 2, 3], [0, 0, 0, 1, 2], [2, 2], [1, 2])
    assert math.isnan(r0.nmi) and math.isnan(r0.ari) and r0.purity == 1.0
    assert mean_agreement([r0, r1])["nmi"] == pytest.approx(r1.nmi)


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="outside its block"):
        agreement_within_primary([0, 1], [0, 0], [0, 2], [2, 2], [2, 2])  # generated 0 is not in block 1
    with pytest.raises(ValueError, match="differ in length"):
        agreement_within_primary([0, 0], [0], [0, 1], [2], [2])
    with pytest.raises(ValueError, match="primary classes"):
        agreement_within_primary([0], [0], [0], [2], [1, 1])
    with pytest.raises(ValueError, match="integer labels"):
        contingency_table(np.array([0.5]), np.array([0]))
