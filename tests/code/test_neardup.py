"""Duplicate detection: what it finds, what it must not find, and that it is deterministic."""

from __future__ import annotations

import itertools
import random
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

from tasks.neardup import (
    canonical_text,
    cluster_near_duplicates,
    connected_groups,
    find_embedding_duplicates,
    find_exact_duplicates,
    find_image_duplicates,
    find_near_duplicates,
    hash_image,
    hash_rows,
    hash_text,
    score_near_duplicates,
)

WORDS = (
    "the film plot actor scene story camera light dark music sound score slow fast funny sad "
    "brilliant dull long short director script ending opening twist hero villain city night day "
    "love war family friend money crime police school space alien robot ghost house road sea"
).split()


def _corpus(n: int, seed: int = 0, length: int = 25) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(length)) + f" {i}" for i in range(n)]


def _shingles(text: str, k: int = 5) -> set[str]:
    norm = canonical_text(text)
    norm = norm if len(norm) >= k else norm.ljust(k)
    return {norm[i : i + k] for i in range(len(norm) - k + 1)}


def _jaccard(a: str, b: str) -> float:
    sa, sb = _shingles(a), _shingles(b)
    return len(sa & sb) / len(sa | sb)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Hello,   World!", "hello world"),
        ("ÉCOLE", "école"),
        ("e\u0301cole", "école"),  # decomposed accent equals the composed one after NFC
        ("Straße", "strasse"),  # casefold, not lower
        ("end.Start", "end start"),
        ("  \t\n ", ""),
    ],
)
def test_normalize_text_makes_copies_equal(raw: str, expected: str) -> None:
    assert canonical_text(raw) == expected


def test_hash_text_ignores_case_punctuation_and_spacing() -> None:
    assert hash_text("Great movie!!") == hash_text("great   MOVIE")
    assert hash_text("Great movie") != hash_text("Great movies")


def test_exact_duplicates_share_an_id_but_empty_texts_do_not() -> None:
    ids = find_exact_duplicates(["A b.", "a B", "c", "", "...", "c!"])
    assert ids[0] == ids[1]
    assert ids[2] == ids[5]
    assert ids[0] != ids[2]
    # "" and "..." normalise to nothing: no content, so no merge.
    assert len({ids[3], ids[4], ids[0], ids[2]}) == 4


def test_near_duplicates_found_through_case_punctuation_and_small_edits() -> None:
    texts = _corpus(200)
    base = texts[7]
    texts.append(base.upper() + "!!!")  # 200: exact after normalisation
    texts.append(base.replace("the", "teh", 1) + " wow")  # 201: typo and extra word
    texts.append(base[: len(base) // 2])  # 202: half the text: Jaccard ~0.5, not a duplicate
    pairs = set(find_near_duplicates(texts, threshold=0.8))
    assert (7, 200) in pairs
    assert (7, 201) in pairs or (200, 201) in pairs
    assert not any(202 in p for p in pairs)
    # Unrelated random texts never pair up.
    assert all(i in (7, 200, 201) and j in (7, 200, 201) for i, j in pairs)


def test_pairs_are_ordered_unique_and_scored_by_exact_jaccard() -> None:
    texts = _corpus(100, seed=3)
    texts += [t.replace("film", "movie") for t in texts[:30]]
    pairs, scores = score_near_duplicates(texts, threshold=0.7)
    assert len(pairs) > 0
    assert (pairs[:, 0] < pairs[:, 1]).all()
    assert len({tuple(p) for p in pairs.tolist()}) == len(pairs)
    for (i, j), score in zip(pairs.tolist(), scores.tolist(), strict=True):
        assert score == pytest.approx(_jaccard(texts[i], texts[j]))
        assert score >= 0.7


def test_recall_against_brute_force_jaccard() -> None:
    rng = random.Random(5)
    texts = _corpus(150, seed=5)
    for i in range(60):  # perturbed copies with a spread of similarities
        words = texts[i].split()
        for _ in range(rng.randint(0, 4)):
            words[rng.randrange(len(words))] = rng.choice(WORDS)
        texts.append(" ".join(words))
    truth = {(i, j) for i, j in itertools.combinations(range(len(texts)), 2) if _jaccard(texts[i], texts[j]) >= 0.8}
    found = set(find_near_duplicates(texts, threshold=0.8))
    clusters = cluster_near_duplicates(texts, threshold=0.8)
    assert found <= truth  # exact verification: no false positives
    assert len(truth) >= 30
    # Pairs are edges of a graph: every true pair must at least land in one cluster.
    same_cluster = sum(clusters[i] == clusters[j] for i, j in truth)
    assert same_cluster / len(truth) >= 0.95


def test_same_input_same_pairs() -> None:
    texts = _corpus(300, seed=1) + [t.upper() for t in _corpus(20, seed=1)]
    assert find_near_duplicates(texts) == find_near_duplicates(list(texts))


def test_word_shingles_and_short_texts() -> None:
    texts = ["ok", "OK!", "no", "a b c d e f g h", "A B C D E F G X"]
    char_pairs = set(find_near_duplicates(texts, threshold=0.8))
    assert (0, 1) in char_pairs and not any(2 in p for p in char_pairs)
    word_pairs = set(find_near_duplicates(texts, threshold=0.5, shingle="word", k=2))
    assert (3, 4) in word_pairs  # 6 of 8 word bigrams shared


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"threshold": 0.0}, "threshold"),
        ({"threshold": 1.5}, "threshold"),
        ({"num_perm": 1}, "num_perm"),
        ({"shingle": "line"}, "shingle"),
        ({"k": 0}, "k=0"),
    ],
)
def test_bad_parameters_are_named(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        find_near_duplicates(["a", "b"], **kwargs)  # type: ignore[arg-type]


def test_degenerate_inputs() -> None:
    assert find_near_duplicates([]) == []
    assert find_near_duplicates(["only one"]) == []
    assert find_near_duplicates(["same", "same", "SAME."]) == [(0, 1), (0, 2)]


def test_embedding_duplicates_threshold_on_cosine() -> None:
    rng = np.random.default_rng(0)
    base = rng.normal(size=(50, 16))
    close = base[3] + rng.normal(scale=0.01, size=16)
    scaled = base[9] * 5.0  # cosine ignores length
    emb = np.vstack([base, close, scaled])
    assert find_embedding_duplicates(emb, threshold=0.99, block=7) == [(3, 50), (9, 51)]


def _smooth_image(seed: int) -> np.ndarray:
    """A photo-like grey image: blurred noise, spread over 0..255."""
    field = ndimage.gaussian_filter(np.random.default_rng(seed).normal(size=(96, 96)), 6)
    return (field - field.min()) / (field.max() - field.min()) * 255


def test_image_phash_matches_edited_copies_not_other_images() -> None:
    rng = np.random.default_rng(1)
    picture = _smooth_image(1)
    brighter = np.clip(picture * 1.1 + 10, 0, 255)
    noisy = picture + rng.normal(scale=8, size=picture.shape)
    resized = picture[::2, ::2]  # half size
    rgb = np.stack([picture] * 3, axis=2)
    images = [picture, brighter, noisy, resized, rgb, _smooth_image(2), _smooth_image(3), picture.T]
    pairs = set(find_image_duplicates(images, max_distance=6))
    assert {(0, j) for j in range(1, 5)} <= pairs
    # Other images, and the transposed one, are different pictures.
    assert not any(j >= 5 for _, j in pairs)
    assert 0 <= hash_image(picture) < 2**64


def test_image_hash_reads_the_cells_a_pipeline_holds(tmp_path: Path) -> None:
    from PIL import Image

    picture = _smooth_image(4).astype(np.uint8)
    path = tmp_path / "picture.png"
    Image.fromarray(picture).save(path)
    frame = pd.DataFrame({"img": pd.Series([picture.tolist()], dtype=object)})  # as JSONL gives it
    frame.to_parquet(tmp_path / "images.parquet")
    from_parquet = pd.read_parquet(tmp_path / "images.parquet")["img"].iloc[0]  # an array of row arrays
    assert hash_image(path) == hash_image(str(path)) == hash_image(from_parquet) == hash_image(picture)


def test_image_hash_rejects_non_images() -> None:
    with pytest.raises(ValueError, match="2-D"):
        hash_image(np.zeros(10))


def test_hash_rows_rounds_floats_and_names_missing_columns() -> None:
    df = pd.DataFrame({"a": [0.1 + 0.2, 0.3, -0.0, 0.0, 1.0], "b": ["x", "x", "y", "y", "x"]})
    h = hash_rows(df, ["a", "b"])
    assert h[0] == h[1]  # 0.30000000000000004 rounds to 0.3
    assert h[2] == h[3]  # -0.0 equals 0.0
    assert h[0] != h[4]
    with pytest.raises(ValueError, match=r"\['c'\].*available columns"):
        hash_rows(df, ["a", "c"])


def test_connected_groups_joins_edges_and_base_groups() -> None:
    base = ["u1", "u2", None, "u1", "u3", np.nan]
    ids = connected_groups(6, [(1, 4)], base)
    assert ids.tolist() == [0, 1, 2, 0, 1, 3]  # NaN/None join nothing; numbered by first row
    assert connected_groups(3).tolist() == [0, 1, 2]
    with pytest.raises(ValueError, match="pair indices"):
        connected_groups(2, [(0, 2)])
