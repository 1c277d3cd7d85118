"""Exact and near-duplicate detection for text, embeddings, images and tabular rows.

Pure numpy/scipy: no Prefect, no MLflow. Everything returns edges (pairs of row
positions) or cluster ids; `connected_groups` turns edges plus user groups into
one group id per row so that a split can keep every cluster on one side.

Text near duplicates use MinHash + LSH banding over character (or word) k-gram
shingles of the normalised text, then check every LSH candidate with its exact
Jaccard similarity, so a returned pair is never a false positive; what LSH can
miss is measured in `bench/near_duplicates.py`. The MinHash is vectorised over
all shingles at once (one multiply-shift hash family, Dietzfelbinger et al.
1997), which is what makes 100k texts take seconds rather than minutes with a
per-document `datasketch.MinHash.update` loop.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Hashable, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt
import pandas as pd
from scipy import fft, sparse
from scipy.sparse import csgraph

Pairs = npt.NDArray[np.int64]  # shape (m, 2), each row (i, j) with i < j

_PUNCT_RE = re.compile(r"[^\w\s]+")
_SPACE_RE = re.compile(r"\s+")
_U64 = np.uint64
_MERSENNE = _U64(0x9E3779B97F4A7C15)  # golden-ratio constant: odd, well-spread bits
# Shingles per block of the MinHash loop: (num_perm x block) uint64 stays in L2 cache.
_BLOCK_SHINGLES = 8192
# Buckets bigger than this are linked as a star + chain, not all pairs (quadratic blow-up).
_MAX_BUCKET_PAIRS = 64
# Candidate pairs verified per batch: bounds the memory of the exact-Jaccard sort.
_VERIFY_SYMBOLS = 4_000_000


# -- normalisation and exact duplicates ----------------------------------------
def canonical_text(text: str) -> str:
    """NFC, casefold, drop punctuation, collapse whitespace: the form two copies share."""
    text = unicodedata.normalize("NFC", text).casefold()
    # Punctuation becomes a space, not nothing: "end.Start" must stay two words.
    text = _PUNCT_RE.sub(" ", text)
    return _SPACE_RE.sub(" ", text).strip()


def hash_text(text: str) -> str:
    """Content hash of the normalised text (hex blake2b, 16 bytes)."""
    return hashlib.blake2b(canonical_text(text).encode("utf-8"), digest_size=16).hexdigest()


def find_exact_duplicates(texts: Sequence[str]) -> npt.NDArray[np.int64]:
    """Cluster id per text: texts equal after `canonical_text` share an id.

    Texts that normalise to "" (empty, only punctuation) carry no content that can
    leak, so each keeps its own id instead of forming one giant cluster.
    """
    norms = [canonical_text(_as_text(t)) for t in texts]
    return _exact_clusters(norms)


def _exact_clusters(norms: Sequence[str]) -> npt.NDArray[np.int64]:
    codes, _ = pd.factorize(pd.Series(norms, dtype=object), sort=False)
    codes = codes.astype(np.int64)
    empty = np.fromiter((len(t) == 0 for t in norms), dtype=bool, count=len(norms))
    if empty.any():
        # Fresh ids beyond the factorised range, one per empty text.
        codes[empty] = codes.max() + 1 + np.arange(int(empty.sum()))
    return _renumber(codes)


def _as_text(value: object) -> str:
    return "" if value is None or (isinstance(value, float) and np.isnan(value)) else str(value)


# -- MinHash + LSH -------------------------------------------------------------
def find_near_duplicates(
    texts: Sequence[str],
    *,
    threshold: float = 0.8,
    num_perm: int = 128,
    shingle: Literal["char", "word"] = "char",
    k: int | None = None,
    seed: int = 1,
) -> list[tuple[int, int]]:
    """Pairs (i, j), i < j, of texts whose shingle Jaccard similarity is >= threshold.

    Exact duplicates (after normalisation) are included; a cluster of m identical
    texts comes back as m - 1 edges to its first member rather than m(m-1)/2 pairs,
    so read the result as graph edges (see `connected_groups`).

    Args:
        threshold: Jaccard similarity of the shingle sets, in (0, 1].
        num_perm: MinHash permutations; more gives a sharper LSH curve, costs linearly.
        shingle: "char" k-grams (default k=5) survive typos; "word" k-grams (default k=3).
        seed: seed of the hash family; fixed so the same texts always give the same pairs.
    """
    pairs, _ = score_near_duplicates(texts, threshold=threshold, num_perm=num_perm, shingle=shingle, k=k, seed=seed)
    return [(int(i), int(j)) for i, j in pairs]


def cluster_near_duplicates(
    texts: Sequence[str],
    *,
    threshold: float = 0.8,
    num_perm: int = 128,
    shingle: Literal["char", "word"] = "char",
    k: int | None = None,
    seed: int = 1,
) -> npt.NDArray[np.int64]:
    """Cluster id per text: connected components of the near-duplicate graph."""
    pairs, _ = score_near_duplicates(texts, threshold=threshold, num_perm=num_perm, shingle=shingle, k=k, seed=seed)
    return connected_groups(len(texts), pairs)


def score_near_duplicates(
    texts: Sequence[str],
    *,
    threshold: float = 0.8,
    num_perm: int = 128,
    shingle: Literal["char", "word"] = "char",
    k: int | None = None,
    seed: int = 1,
) -> tuple[Pairs, npt.NDArray[np.float64]]:
    """Like `find_near_duplicates`, as an (m, 2) array plus each pair's exact Jaccard."""
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold={threshold} is not a Jaccard similarity; pass a value in (0, 1]")
    if num_perm < 2:
        raise ValueError(f"num_perm={num_perm} is too small for LSH; use 64-256")
    if shingle not in ("char", "word"):
        raise ValueError(f'shingle="{shingle}" is unknown; use "char" or "word"')
    k = k if k is not None else (5 if shingle == "char" else 3)
    if k < 1:
        raise ValueError(f"k={k} must be at least 1")

    norms = [canonical_text(_as_text(t)) for t in texts]
    exact = _exact_clusters(norms)
    # Work on one representative per exact cluster; copies are linked to it at the end.
    _, rep_pos = np.unique(exact, return_index=True)
    reps = rep_pos[[len(norms[i]) > 0 for i in rep_pos]].astype(np.int64)

    copy_pairs = _star_edges(exact)
    if len(reps) < 2:
        return _finish(copy_pairs, np.ones(len(copy_pairs)))

    indptr, shingles = _shingle_sets([norms[i] for i in reps], shingle=shingle, k=k)
    signature = _minhash(indptr, shingles, num_perm=num_perm, seed=seed)
    bands, rows = _lsh_params(threshold, num_perm)
    candidates = _lsh_candidates(signature, bands=bands, rows=rows)
    jaccard = _exact_jaccard(indptr, shingles, candidates)
    keep = jaccard >= threshold - 1e-12
    near = reps[candidates[keep]]
    near.sort(axis=1)
    pairs = np.concatenate([copy_pairs, near])
    scores = np.concatenate([np.ones(len(copy_pairs)), jaccard[keep]])
    return _finish(pairs, scores)


def _finish(pairs: Pairs, scores: npt.NDArray[np.float64]) -> tuple[Pairs, npt.NDArray[np.float64]]:
    pairs = pairs.reshape(-1, 2).astype(np.int64)
    order = np.lexsort((pairs[:, 1], pairs[:, 0]))
    return pairs[order], scores[order].astype(np.float64)


def _star_edges(clusters: npt.NDArray[np.int64]) -> Pairs:
    """Edges from each member of a cluster to the cluster's first member."""
    _, first = np.unique(clusters, return_index=True)
    anchor = first[clusters]
    idx = np.arange(len(clusters), dtype=np.int64)
    copies = anchor != idx
    return np.stack([anchor[copies], idx[copies]], axis=1).astype(np.int64)


def _shingle_sets(
    norms: Sequence[str], *, shingle: Literal["char", "word"], k: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.uint64]]:
    """Per-document sorted unique 32-bit shingle hashes, as CSR (indptr, data)."""
    if shingle == "char":
        # Pad short texts so each has at least one k-gram (the whole text).
        padded = [t if len(t) >= k else t.ljust(k) for t in norms]
        lens = np.fromiter((len(t) for t in padded), dtype=np.int64, count=len(padded))
        symbols = np.frombuffer("".join(padded).encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
    else:
        tokens = [t.split() for t in norms]
        tokens = [tok if len(tok) >= k else tok + [""] * (k - len(tok)) for tok in tokens]
        lens = np.fromiter((len(tok) for tok in tokens), dtype=np.int64, count=len(tokens))
        flat = [w for tok in tokens for w in tok]
        codes, _ = pd.factorize(pd.Series(flat, dtype=object), sort=False)
        symbols = codes.astype(np.uint64) + _U64(1)

    starts = np.concatenate([[0], np.cumsum(lens)[:-1]]).astype(np.int64)
    n_windows = len(symbols) - k + 1
    # Polynomial rolling hash of every length-k window, then keep the windows
    # that lie inside one document.
    h = np.zeros(n_windows, dtype=np.uint64)
    for j in range(k):
        h *= _MERSENNE
        h += symbols[j : j + n_windows]
    doc = np.repeat(np.arange(len(lens), dtype=np.int64), lens)[:n_windows]
    inside = np.arange(n_windows, dtype=np.int64) + k <= (starts + lens)[doc]
    h32 = _mix64(h[inside]) >> _U64(32)
    doc = doc[inside]
    keys = np.unique((doc.astype(np.uint64) << _U64(32)) | h32)
    doc_of_key = (keys >> _U64(32)).astype(np.int64)
    indptr = np.zeros(len(lens) + 1, dtype=np.int64)
    np.cumsum(np.bincount(doc_of_key, minlength=len(lens)), out=indptr[1:])
    return indptr, keys & _U64(0xFFFFFFFF)


def _mix64(z: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    """splitmix64 finaliser: spreads a polynomial hash over all 64 bits."""
    z = z ^ (z >> _U64(30))
    z = z * _U64(0xBF58476D1CE4E5B9)
    z = z ^ (z >> _U64(27))
    z = z * _U64(0x94D049BB133111EB)
    return z ^ (z >> _U64(31))


def _minhash(
    indptr: npt.NDArray[np.int64], shingles: npt.NDArray[np.uint64], *, num_perm: int, seed: int
) -> npt.NDArray[np.uint32]:
    """MinHash signatures, shape (num_perm, n_docs); every document must have a shingle."""
    rng = np.random.default_rng(seed)
    # h(x) = (a*x + b) mod 2^64 >> 32 with odd a: multiply-add-shift, 2-universal on 32-bit x.
    a = rng.integers(1, 2**63, size=num_perm, dtype=np.uint64) | _U64(1)
    b = rng.integers(0, 2**63, size=num_perm, dtype=np.uint64)
    a_col, b_col = a[:, None], b[:, None]
    n_docs = len(indptr) - 1
    signature = np.empty((num_perm, n_docs), dtype=np.uint32)
    lo = 0
    while lo < n_docs:
        hi = int(np.searchsorted(indptr, indptr[lo] + _BLOCK_SHINGLES, side="right")) - 1
        hi = min(max(hi, lo + 1), n_docs)
        block = shingles[indptr[lo] : indptr[hi]]
        values = a_col * block[None, :]
        values += b_col
        values >>= _U64(32)
        signature[:, lo:hi] = np.minimum.reduceat(values, indptr[lo:hi] - indptr[lo], axis=1)
        lo = hi
    return signature


def _lsh_params(threshold: float, num_perm: int, recall: float = 0.95) -> tuple[int, int]:
    """Bands and rows per band: the fewest candidates that still catch `recall` of pairs AT the threshold.

    A pair with Jaccard s shares a band with probability 1 - (1 - s^rows)^bands
    (Leskovec et al., Mining of Massive Datasets, ch. 3.4). More rows per band
    means fewer chance candidates, so take the most rows that keep that
    probability >= `recall` at s = threshold; pairs above it are caught more often.
    Candidates are verified exactly afterwards, so extra ones cost only time.
    """
    for rows in range(num_perm, 0, -1):
        bands = num_perm // rows
        if 1.0 - (1.0 - threshold**rows) ** bands >= recall:
            return bands, rows
    return num_perm, 1


def _lsh_candidates(signature: npt.NDArray[np.uint32], *, bands: int, rows: int) -> Pairs:
    """Unique pairs of documents that share at least one LSH band."""
    n = signature.shape[1]
    found: list[Pairs] = []
    for band in range(bands):
        h = np.zeros(n, dtype=np.uint64)
        for row in signature[band * rows : (band + 1) * rows]:
            h = h * _MERSENNE + row.astype(np.uint64)
        found.append(_bucket_pairs(_mix64(h)))
    if not found:
        return np.empty((0, 2), dtype=np.int64)
    pairs = np.concatenate(found)
    codes = np.unique(pairs[:, 0] * n + pairs[:, 1])
    return np.stack([codes // n, codes % n], axis=1)


def _bucket_pairs(keys: npt.NDArray[np.uint64]) -> Pairs:
    """Pairs (i < j) of positions whose keys are equal.

    Buckets larger than `_MAX_BUCKET_PAIRS` give a star to their first member plus a
    chain instead of all pairs: enough to connect them, and linear in bucket size.
    """
    order = np.argsort(keys, kind="stable").astype(np.int64)
    sorted_keys = keys[order]
    new_run = np.concatenate([[True], sorted_keys[1:] != sorted_keys[:-1]])
    run_id = np.cumsum(new_run) - 1
    run_start = np.flatnonzero(new_run)
    run_len = np.diff(np.append(run_start, len(keys)))
    if len(run_len) == 0 or run_len.max() < 2:
        return np.empty((0, 2), dtype=np.int64)
    pos_len = run_len[run_id]
    out: list[Pairs] = []
    for d in range(1, min(int(run_len.max()), _MAX_BUCKET_PAIRS)):
        same = run_id[:-d] == run_id[d:]
        # Small buckets: every offset; big buckets: only the chain (d == 1).
        same &= (pos_len[:-d] <= _MAX_BUCKET_PAIRS) | (d == 1)
        if not same.any():
            break
        out.append(np.stack([order[:-d][same], order[d:][same]], axis=1))
    big = pos_len > _MAX_BUCKET_PAIRS
    if big.any():
        anchors = order[run_start[run_id[big]]]
        members = order[big]
        star = anchors != members
        out.append(np.stack([anchors[star], members[star]], axis=1))
    pairs = np.concatenate(out)
    pairs.sort(axis=1)
    return pairs


def _exact_jaccard(
    indptr: npt.NDArray[np.int64], shingles: npt.NDArray[np.uint64], pairs: Pairs
) -> npt.NDArray[np.float64]:
    """Exact Jaccard similarity of the shingle sets of each pair, in batches."""
    sizes = np.diff(indptr)
    out = np.empty(len(pairs), dtype=np.float64)
    cost = np.cumsum(sizes[pairs[:, 0]] + sizes[pairs[:, 1]]) if len(pairs) else np.empty(0)
    lo = 0
    while lo < len(pairs):
        base = cost[lo - 1] if lo else 0
        hi = max(int(np.searchsorted(cost, base + _VERIFY_SYMBOLS, side="right")), lo + 1)
        batch = pairs[lo:hi]
        m = len(batch)
        ids = np.arange(m, dtype=np.uint64)
        left = _gather(indptr, shingles, batch[:, 0])
        right = _gather(indptr, shingles, batch[:, 1])
        left_keys = (np.repeat(ids, sizes[batch[:, 0]]) << _U64(32)) | left
        right_keys = (np.repeat(ids, sizes[batch[:, 1]]) << _U64(32)) | right
        # Each side's set is duplicate-free, so an adjacent equal key means "in both".
        keys = np.sort(np.concatenate([left_keys, right_keys]))
        both = keys[1:][keys[1:] == keys[:-1]] >> _U64(32)
        inter = np.bincount(both.astype(np.int64), minlength=m).astype(np.float64)
        union = sizes[batch[:, 0]] + sizes[batch[:, 1]] - inter
        out[lo:hi] = inter / union
        lo = hi
    return out


def _gather(
    indptr: npt.NDArray[np.int64], data: npt.NDArray[np.uint64], docs: npt.NDArray[np.int64]
) -> npt.NDArray[np.uint64]:
    """Concatenation of the CSR rows `docs`, without a Python loop."""
    lens = indptr[docs + 1] - indptr[docs]
    total = int(lens.sum())
    offsets = np.repeat(indptr[docs] - np.concatenate([[0], np.cumsum(lens)[:-1]]), lens)
    return data[offsets + np.arange(total, dtype=np.int64)]


# -- embeddings ----------------------------------------------------------------
def find_embedding_duplicates(
    embeddings: npt.ArrayLike, *, threshold: float = 0.95, block: int = 2048
) -> list[tuple[int, int]]:
    """Pairs (i, j), i < j, whose embeddings have cosine similarity >= threshold.

    Exact and quadratic in the number of rows (blocked matrix products): fine for
    tens of thousands of rows; use MinHash on the text for more.
    """
    matrix = np.asarray(embeddings, dtype=np.float32)
    if matrix.ndim != 2:
        raise ValueError(f"embeddings must be a 2-D array (rows x dims), got shape {matrix.shape}")
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    unit = matrix / np.where(norms == 0, 1.0, norms)
    found: list[tuple[int, int]] = []
    for lo in range(0, len(unit), block):
        sims = unit[lo : lo + block] @ unit[lo:].T
        ii, jj = np.nonzero(sims >= threshold)
        jj = jj + lo
        ii = ii + lo
        upper = jj > ii
        found.extend(zip(ii[upper].tolist(), jj[upper].tolist(), strict=True))
    return sorted(found)


# -- images --------------------------------------------------------------------
def hash_image(image: npt.ArrayLike | str | Path, *, hash_size: int = 8) -> int:
    """Perceptual hash (pHash): signs of the low-frequency DCT of a 32x32 greyscale copy.

    Args:
        image: 2-D greyscale, or 3-D with channels last (averaged to grey), or the path of an
            image file (a pipeline's image column holds either).

    Returns:
        A `hash_size**2`-bit integer; similar images differ in few bits.
    """
    pixels = _pixels(image)
    if pixels.ndim == 3:
        pixels = pixels.mean(axis=2)
    if pixels.ndim != 2 or min(pixels.shape) == 0:
        raise ValueError(f"image must be 2-D (or 3-D with channels last), got shape {pixels.shape}")
    side = 4 * hash_size
    small = _resize_mean(pixels, side)
    coeffs = fft.dctn(small, type=2, norm="ortho")[:hash_size, :hash_size].ravel()
    # The DC term is the mean brightness: leave it out of the median.
    bits = coeffs > np.median(coeffs[1:])
    return int("".join("1" if bit else "0" for bit in bits), 2)


def _pixels(image: npt.ArrayLike | str | Path) -> npt.NDArray[np.float64]:
    if isinstance(image, str | Path):
        from PIL import Image  # lazy: only image paths need Pillow

        with Image.open(image) as img:
            return np.asarray(img, dtype=np.float64)
    array = np.asarray(image)
    if array.dtype == object and array.ndim == 1 and len(array):
        # A 2-D image read back from Parquet is an array of row arrays.
        return np.stack([np.asarray(row, dtype=np.float64) for row in array])
    return array.astype(np.float64)


def _resize_mean(pixels: npt.NDArray[np.float64], side: int) -> npt.NDArray[np.float64]:
    """Area-average resize to side x side (nearest neighbour where it upsamples)."""
    for axis in (0, 1):
        size = pixels.shape[axis]
        starts = (np.arange(side) * size) // side
        # reduceat sums up to the next start; where two starts coincide it returns
        # the single element at that start, so the count there is 1.
        counts = np.maximum(np.diff(np.append(starts, size)), 1)
        sums = np.add.reduceat(pixels, starts, axis=axis)
        pixels = sums / (counts[:, None] if axis == 0 else counts[None, :])
    return pixels


def find_image_duplicates(
    images: Sequence[npt.ArrayLike], *, max_distance: int = 6, hash_size: int = 8
) -> list[tuple[int, int]]:
    """Pairs (i, j), i < j, whose pHashes differ in at most `max_distance` bits.

    All-pairs Hamming distance in blocks: quadratic, fine for tens of thousands.
    """
    if hash_size > 8:
        raise ValueError(f"hash_size={hash_size} gives more than 64 bits; use 8 or less")
    hashes = np.array([hash_image(img, hash_size=hash_size) for img in images], dtype=np.uint64)
    return _hamming_pairs(hashes, max_distance)


def _hamming_pairs(hashes: npt.NDArray[np.uint64], max_distance: int, block: int = 2048) -> list[tuple[int, int]]:
    found: list[tuple[int, int]] = []
    for lo in range(0, len(hashes), block):
        dist = np.bitwise_count(hashes[lo : lo + block, None] ^ hashes[None, lo:])
        ii, jj = np.nonzero(dist <= max_distance)
        ii, jj = ii + lo, jj + lo
        upper = jj > ii
        found.extend(zip(ii[upper].tolist(), jj[upper].tolist(), strict=True))
    return sorted(found)


# -- tabular -------------------------------------------------------------------
def hash_rows(df: pd.DataFrame, columns: Sequence[str], *, decimals: int = 6) -> npt.NDArray[np.uint64]:
    """Hash of each row's `columns`, floats rounded to `decimals` (so 0.1+0.2 == 0.3)."""
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"feature columns {missing} are missing; available columns: {list(df.columns)}")
    part = df[list(columns)].copy()
    for col in part.columns:
        if pd.api.types.is_float_dtype(part[col]):
            # + 0.0 turns -0.0 into 0.0, which would otherwise hash differently.
            part[col] = part[col].round(decimals) + 0.0
    hashed = pd.util.hash_pandas_object(part, index=False).to_numpy().astype(np.uint64)
    return hashed


def equal_value_edges(values: Sequence[object]) -> npt.NDArray[np.int64]:
    """Star edges joining rows with equal non-missing values."""
    codes, _ = pd.factorize(pd.Series(list(values), dtype=object), use_na_sentinel=True)
    rows = np.flatnonzero(codes >= 0)
    if len(rows) == 0:
        return np.empty((0, 2), dtype=np.int64)
    first = np.full(int(codes.max()) + 1, -1, dtype=np.int64)
    # Reverse assignment leaves each code's first row in `first`.
    first[codes[rows[::-1]]] = rows[::-1]
    anchor = first[codes[rows]]
    keep = anchor != rows
    return np.stack([anchor[keep], rows[keep]], axis=1).astype(np.int64)


def as_edges(pairs: list[tuple[int, int]]) -> npt.NDArray[np.int64]:
    """A list of (i, j) pairs as an (m, 2) edge array."""
    return np.asarray(pairs, dtype=np.int64).reshape(-1, 2)


# -- groups --------------------------------------------------------------------
def connected_groups(
    n: int,
    pairs: npt.ArrayLike | Sequence[tuple[int, int]] = (),
    base_groups: Sequence[Hashable] | pd.Series | npt.ArrayLike | None = None,
) -> npt.NDArray[np.int64]:
    """Group id per row: rows joined by an edge or sharing a base group end in one group.

    A union-find over `pairs` plus "same value in `base_groups`" (missing values
    join nothing). Ids are 0..G-1 in order of each group's first row, so the
    result depends only on the inputs.
    """
    edges: npt.NDArray[np.int64] = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    if len(edges) and (edges.min() < 0 or edges.max() >= n):
        raise ValueError(f"pair indices must lie in [0, {n}); got {edges.min()}..{edges.max()}")
    n_nodes = n
    if base_groups is not None:
        if isinstance(base_groups, pd.Series):
            values = base_groups.reset_index(drop=True)
        else:
            values = pd.Series(list(np.asarray(base_groups, dtype=object)), dtype=object)
        if len(values) != n:
            raise ValueError(f"base_groups has {len(values)} values for {n} rows")
        codes, uniques = pd.factorize(values, use_na_sentinel=True)
        has = codes >= 0
        # One extra node per group value; each row joins its value's node.
        group_edges = np.stack([np.flatnonzero(has), n + codes[has]], axis=1).astype(np.int64)
        edges = np.concatenate([edges, group_edges])
        n_nodes = n + len(uniques)
    graph = sparse.coo_matrix(
        (np.ones(len(edges), dtype=np.int8), (edges[:, 0], edges[:, 1])), shape=(n_nodes, n_nodes)
    )
    _, labels = csgraph.connected_components(graph, directed=False)
    return _renumber(labels[:n].astype(np.int64))


def _renumber(labels: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """Relabel to 0..G-1 in order of first appearance."""
    if len(labels) == 0:
        return labels.astype(np.int64)
    uniq, first, inverse = np.unique(labels, return_index=True, return_inverse=True)
    rank = np.empty(len(uniq), dtype=np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(len(uniq))
    return rank[inverse]
