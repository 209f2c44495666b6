"""Content vectors of catalog items, and how much a user's recent positives resemble each item.

Text (title + free text) is tokenized and normalized by River's `feature_extraction.BagOfWords`
(lowercase, accents stripped, word tokens): River is already how streamrec learns, its tokenizer is
maintained and fast on 2 cores, and nothing else needs a model download. Each item is then a
sparse vector: TF-IDF over its words (sublinear term frequency, smoothed IDF from the live
catalog's document frequencies) and a one-hot block of its categories, each block L2-normalized
and weighted, the whole row L2-normalized. A user's profile is the mean of their recent positives'
rows; an item's content score is its cosine with that profile, in [0, 1].

Document frequencies are exact under updates and retirements (a replaced record first takes its
old words out), so the vectors depend only on the catalog's current content, never on the order of
its edits. The matrix is rebuilt lazily, once per change of the catalog, when first needed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from river.feature_extraction import BagOfWords

from streamrec.learners.base import FloatArray, IntArray

TEXT_WEIGHT = 0.5
"""Weight of the words block against the categories block (1.0): on ML-100K, genres say more
about taste than title words; words still separate items that share all their genres."""

_CATEGORY = "\x00"  # prefix of a category's column name: never produced by the tokenizer


class ContentIndex:
    """Per item index: its term counts; the catalog's document frequencies; the matrix (a cache)."""

    def __init__(self) -> None:
        self._bag = BagOfWords(strip_accents=True, lowercase=True)
        self.terms: dict[int, dict[str, int]] = {}
        self.categories: dict[int, tuple[str, ...]] = {}
        self.df: dict[str, int] = {}
        self._matrix: _Rows | None = None

    def __len__(self) -> int:
        return len(self.terms)

    def __getstate__(self) -> dict[str, Any]:
        # Sorted pairs: dicts would pickle (and hash) in insertion order, which depends on the
        # order of catalog edits; the cached matrix is rebuilt from these.
        return {
            "terms": sorted((i, sorted(t.items())) for i, t in self.terms.items()),
            "categories": sorted(self.categories.items()),
            "df": sorted(self.df.items()),
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._bag = BagOfWords(strip_accents=True, lowercase=True)
        self.terms = {i: dict(t) for i, t in state["terms"]}
        self.categories = dict(state["categories"])
        self.df = dict(state["df"])
        self._matrix = None

    def upsert(self, item: int, text: str, categories: Sequence[str]) -> None:
        """Describe `item` by `text` and `categories` (replacing what it had)."""
        self.remove(item)
        terms = {str(k): int(v) for k, v in self._bag.transform_one(text).items()}
        cats = tuple(dict.fromkeys(categories))
        if not terms and not cats:
            return
        self.terms[item] = terms
        self.categories[item] = cats
        df = self.df
        for name in (*terms, *(_CATEGORY + c for c in cats)):
            df[name] = df.get(name, 0) + 1
        self._matrix = None

    def remove(self, item: int) -> None:
        terms = self.terms.pop(item, None)
        if terms is None:
            return
        df = self.df
        for name in (*terms, *(_CATEGORY + c for c in self.categories.pop(item))):
            left = df[name] - 1
            if left:
                df[name] = left
            else:
                del df[name]
        self._matrix = None

    def matrix(self) -> _Rows:
        """Every described item's unit row (a cache, rebuilt after a change)."""
        if self._matrix is None:
            self._matrix = self._build()
        return self._matrix

    def _build(self) -> _Rows:
        columns = {name: col for col, name in enumerate(sorted(self.df))}
        n_docs = len(self.terms)
        n_rows = max(self.terms, default=-1) + 1
        lengths = np.zeros(n_rows, dtype=np.int64)
        cols: list[int] = []
        values: list[float] = []
        df = self.df
        for item in sorted(self.terms):
            words = [
                (columns[t], (1.0 + math.log(c)) * (math.log((1 + n_docs) / (1 + df[t])) + 1.0))
                for t, c in sorted(self.terms[item].items())
            ]
            cats = [columns[_CATEGORY + c] for c in self.categories[item]]
            word_norm = math.sqrt(sum(v * v for _, v in words)) or 1.0
            row = [(col, TEXT_WEIGHT * v / word_norm) for col, v in words]
            row += [(col, 1.0 / math.sqrt(len(cats))) for col in cats]
            norm = math.sqrt(sum(v * v for _, v in row)) or 1.0
            lengths[item] = len(row)
            cols.extend(col for col, _ in row)
            values.extend(v / norm for _, v in row)
        indptr = np.zeros(n_rows + 1, dtype=np.int64)
        np.cumsum(lengths, out=indptr[1:])
        return _Rows(
            indptr,
            np.array(cols, dtype=np.int64),
            np.array(values, dtype=np.float64),
            np.repeat(np.arange(n_rows, dtype=np.int64), lengths),
            max(len(columns), 1),
        )

    def scores(self, histories: Sequence[IntArray], n_items: int) -> FloatArray:
        """(len(histories) × n_items): each item's cosine with the mean of a history's rows."""
        rows = self.matrix()
        out = np.zeros((len(histories), n_items))
        n = min(n_items, rows.n_rows)
        for k, history in enumerate(histories):
            profile = rows.sum_of(history)
            norm = math.sqrt(float(profile @ profile))
            if norm > 0.0:
                out[k, :n] = rows.dot(profile / norm)[:n]
        return out

    def most_similar(self, history: IntArray, item: int) -> int | None:
        """The history item whose content is closest to `item`'s (None if none shares any)."""
        rows = self.matrix()
        if item not in self.terms or not len(history):
            return None
        known = history[history < rows.n_rows]
        if not len(known):
            return None
        similarity = rows.dot(rows.sum_of(np.array([item], dtype=np.int64)))[known]
        best = int(similarity.argmax())
        return int(known[best]) if similarity[best] > 0.0 else None


@dataclass(frozen=True, eq=False)
class _Rows:
    """Sparse rows in CSR form, with the two products scoring needs done in plain numpy: at one
    user per call, scipy.sparse's per-call overhead (~1 ms) is many times the arithmetic."""

    indptr: IntArray
    indices: IntArray
    data: FloatArray
    row_of: IntArray  # the row of each stored value
    n_columns: int

    @property
    def n_rows(self) -> int:
        return len(self.indptr) - 1

    def sum_of(self, items: IntArray) -> FloatArray:
        """The dense sum of these rows (items beyond the rows add nothing)."""
        items = items[items < self.n_rows]
        starts, ends = self.indptr[items], self.indptr[items + 1]
        lengths = ends - starts
        at = np.repeat(starts - np.cumsum(lengths) + lengths, lengths) + np.arange(lengths.sum())
        summed = np.bincount(self.indices[at], weights=self.data[at], minlength=self.n_columns)
        return summed.astype(np.float64, copy=False)

    def dot(self, vector: FloatArray) -> FloatArray:
        """Every row's dot product with a dense vector."""
        products = self.data * vector[self.indices]
        return np.bincount(self.row_of, weights=products, minlength=self.n_rows).astype(
            np.float64, copy=False
        )
