"""Knots of irregular galaxies folded into their galaxy (astrodask.fragments)."""

import numpy as np

from astrodask.fragments import (dominant_classes, fold_irregular_fragments,
                                 fold_saturated_pieces, touching_pairs)

# U-Net classes as the Morpheus card orders them, background last
SPHEROID, DISK, IRREGULAR, POINT, BACKGROUND = range(5)


def disc(shape, y, x, r):
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    return (yy - y) ** 2 + (xx - x) ** 2 <= r ** 2


def window(classes_of_regions):
    """Probability maps: each (mask, class) region is that class with probability 0.9."""
    shape = classes_of_regions[0][0].shape
    probabilities = np.full((5, *shape), 0.025, np.float32)
    probabilities[BACKGROUND] = 0.9
    for mask, k in classes_of_regions:
        probabilities[:, mask] = 0.025
        probabilities[k, mask] = 0.9
    return probabilities


def test_touching_pairs_are_overlapping_or_adjacent_masks():
    shape = (40, 40)
    a = np.zeros(shape, bool)
    a[5:10, 5:10] = True
    b = np.zeros(shape, bool)
    b[10:12, 3:5] = True  # touches a's corner (8-connected)
    c = np.zeros(shape, bool)
    c[20:25, 20:25] = True
    d = c.copy()  # overlaps c
    e = np.zeros(shape, bool)
    e[5:10, 11:14] = True  # one empty column from a
    assert touching_pairs(np.array([a, b, c, d, e])) == [(0, 1), (2, 3)]


def test_dominant_class_is_flux_weighted_and_ignores_the_background():
    shape = (30, 30)
    galaxy = disc(shape, 15, 15, 8)
    probabilities = window([(galaxy, IRREGULAR)])
    probabilities[:, 15, 15] = [0, 0.3, 0.1, 0, 0.6]  # bright centre: disk over irregular
    weight = np.ones(shape)
    assert dominant_classes(galaxy[None], probabilities, weight).tolist() == [IRREGULAR]
    weight[15, 15] = 1e4
    assert dominant_classes(galaxy[None], probabilities, weight).tolist() == [DISK]
    assert dominant_classes(galaxy[None], probabilities, np.zeros(shape)).tolist() == [-1]


def test_knots_of_an_irregular_galaxy_join_it_and_other_neighbours_stay():
    shape = (80, 80)
    galaxy = disc(shape, 40, 40, 14)
    knot = disc(shape, 40, 55, 3)          # touches the galaxy, a twentieth of its area
    chain = disc(shape, 40, 60, 2)         # touches only the knot: same family
    star = disc(shape, 26, 40, 3)          # touches the galaxy, but a point source
    big_irregular = disc(shape, 62, 40, 9)  # irregular too, but 0.4 of the galaxy's area
    far = disc(shape, 8, 8, 3)             # irregular, on its own
    masks = np.array([knot, galaxy, star, chain, big_irregular, far])
    probabilities = window([(galaxy | knot | chain | big_irregular | far, IRREGULAR),
                            (star, POINT)])
    weight = np.ones(shape)
    folded, keep, members = fold_irregular_fragments(masks, probabilities, weight, IRREGULAR,
                                                     0.3)
    assert keep.tolist() == [1, 2, 4, 5]
    assert [sorted(m.tolist()) for m in members] == [[0, 1, 3], [2], [4], [5]]
    assert members[0][0] == 1                  # the galaxy itself first
    np.testing.assert_array_equal(folded[0], galaxy | knot | chain)
    np.testing.assert_array_equal(folded[1:], masks[[2, 4, 5]])
    # a larger fraction also takes the big irregular neighbour; 0 folds nothing
    _, keep, _ = fold_irregular_fragments(masks, probabilities, weight, IRREGULAR, 0.5)
    assert keep.tolist() == [1, 2, 5]
    _, keep, members = fold_irregular_fragments(masks, probabilities, weight, IRREGULAR, 0.0)
    assert keep.tolist() == list(range(6)) and [m.tolist() for m in members] == [[k] for k in
                                                                                 range(6)]
    # a disk galaxy keeps its neighbours whatever they are
    disk = window([(galaxy, DISK), (knot | chain | big_irregular | far, IRREGULAR),
                   (star, POINT)])
    _, keep, _ = fold_irregular_fragments(masks, disk, weight, IRREGULAR, 0.3)
    assert keep.tolist() == list(range(6))


def test_pieces_of_a_saturated_star_join_it_and_unsaturated_neighbours_stay():
    shape = (80, 80)
    star = disc(shape, 40, 40, 8)
    trail = np.zeros(shape, bool)
    trail[49:60, 39:42] = True  # a bleed-trail piece below the star, touching it
    neighbour = disc(shape, 40, 51, 2)  # touches the star, not saturated
    lone = np.zeros(shape, bool)
    lone[5:8, 5:8] = True  # saturated (a cosmic ray, say) but touching nothing
    saturated = np.zeros(shape, bool)
    saturated[36:45, 39:42] = saturated[49:60, 39:42] = saturated[6, 6] = True
    masks = np.array([trail, star, neighbour, lone])
    folded, keep, members = fold_saturated_pieces(masks, saturated)
    assert keep.tolist() == [1, 2, 3]
    assert [m.tolist() for m in members] == [[1, 0], [2], [3]]
    np.testing.assert_array_equal(folded[0], star | trail)
    np.testing.assert_array_equal(folded[1:], masks[[2, 3]])
    # an unsaturated family is left alone
    _, keep, _ = fold_saturated_pieces(masks, np.zeros(shape, bool))
    assert keep.tolist() == [0, 1, 2, 3]
