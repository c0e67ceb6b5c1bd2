"""Label modes against vote vectors worked by hand (Microsoft's FERPlus semantics)."""

import numpy as np
import pytest

from fer_jax.data import labels

N, H, S, SAD, A, D, F, C, U, NF = range(10)


def onehot(i, value=1.0):
  v = np.zeros(8, np.float32)
  v[i] = value
  return v


def dist(pairs):
  v = np.zeros(8, np.float32)
  for i, p in pairs:
    v[i] = p
  return v


CASES = [
    # fer0000000: singles dropped -> 4 neutral, 3 anger, 2 disgust of 9: no majority (4 <= 4.5);
    # the top two hold 7 >= 6.75; multi-target keeps votes >= 2.7.
    ([4, 0, 0, 1, 3, 2, 0, 0, 0, 0],
     dict(majority=None, probability=dist([(N, 4 / 7), (A, 3 / 7)]),
          crossentropy=dist([(N, 4 / 7), (A, 3 / 7)]), multi_target=dist([(N, 4 / 7), (A, 3 / 7)]))),
    # fer0000001: 6 neutral, 2 unknown of 8 after dropping singles: neutral everywhere.
    ([6, 0, 1, 1, 0, 0, 0, 0, 2, 0],
     dict(majority=onehot(N), probability=onehot(N), crossentropy=onehot(N),
          multi_target=onehot(N))),
    # 5 neutral, 3 sadness of 8: majority neutral; the top one (5) is short of 6, so two.
    ([5, 0, 0, 3, 1, 0, 0, 0, 1, 0],
     dict(majority=onehot(N), probability=dist([(N, 5 / 8), (SAD, 3 / 8)]),
          crossentropy=dist([(N, 5 / 8), (SAD, 3 / 8)]), multi_target=dist([(N, 5 / 8), (SAD, 3 / 8)]))),
    # Mostly unknown: discarded in every mode.
    ([0, 0, 0, 0, 0, 0, 0, 0, 7, 3],
     dict(majority=None, probability=None, crossentropy=None, multi_target=None)),
    # Neutral ties with NF: NF is dropped, leaving 4 of 8 (not more than half) -> discarded.
    # Multi-target keeps both (>= 2.4); argmax of the tie is neutral (the first), so the image
    # is kept and NF's share is cut off: neutral alone.
    ([4, 0, 0, 0, 0, 0, 0, 0, 0, 4],
     dict(majority=None, probability=None, crossentropy=None, multi_target=onehot(N))),
    # Three-way tie (the contempt single vote is dropped): no majority; a third each.
    ([3, 3, 3, 0, 0, 0, 0, 1, 0, 0],
     dict(majority=None, probability=dist([(N, 1 / 3), (H, 1 / 3), (S, 1 / 3)]),
          crossentropy=dist([(N, 1 / 3), (H, 1 / 3), (S, 1 / 3)]),
          multi_target=dist([(N, 1 / 3), (H, 1 / 3), (S, 1 / 3)]))),
]


@pytest.mark.parametrize("votes,expected", CASES)
@pytest.mark.parametrize("mode", labels.LABEL_MODES)
def test_modes_match_hand_computed(votes, expected, mode):
  got = labels.vote_distribution(votes, mode)
  want = expected[mode]
  if want is None:
    assert got is None
  else:
    np.testing.assert_allclose(got, want, atol=1e-6)


def test_majority_label_and_vectorised_split():
  votes = np.array([c[0] for c in CASES])
  kept, targets = labels.targets_for_split(votes, "majority")
  np.testing.assert_array_equal(kept, [False, True, True, False, False, False])
  assert labels.majority_label(votes[1]) == N
  np.testing.assert_array_equal(targets[0], np.zeros(8))


def test_bad_votes_are_named():
  with pytest.raises(ValueError, match="10 counts"):
    labels.vote_distribution([1, 2, 3], "majority")
  with pytest.raises(ValueError, match="label mode"):
    labels.vote_distribution(CASES[1][0], "plurality")
  with pytest.raises(ValueError, match=">= 0"):
    labels.vote_distribution([-1] + [0] * 9, "majority")


SHARED = __import__("pathlib").Path(__file__).resolve().parents[2] / "shared" / "data" / "ferplus"


@pytest.mark.skipif(not (SHARED / "FER2013Train" / "label.csv").exists(),
                    reason="../shared/data/ferplus is not beside this checkout")
def test_majority_counts_on_the_full_label_files():
  """Microsoft's protocol keeps 25,045 training and 3,191 validation faces."""
  import csv  # pylint: disable=g-import-not-at-top
  for folder, want in (("FER2013Train", 25_045), ("FER2013Valid", 3_191)):
    votes = np.array([[int(v) for v in r[2:12]]
                      for r in csv.reader(open(SHARED / folder / "label.csv"))])
    kept, _ = labels.targets_for_split(votes, "majority")
    assert kept.sum() == want
