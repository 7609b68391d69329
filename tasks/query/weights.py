"""Per-query fusion weights: a query's own evidence moves its dense weight.

One sentence: identifier-like tokens, terms rare in the corpus (outside a question in plain
words) and a BM25 top hit that stands out from the rest move a query toward the lexical side;
a question in plain words moves it toward the dense side. Each signal is a number in 0..1;
the question signal less the strongest lexical one moves the weight on the logit scale
(`STEP` per unit), so a 0.5 weight stays within 0.27..0.73 and a query with no signal keeps
the weight the index chose. A question moves from even weights at least: the index's weight
is chosen on probes that are mostly headings and sentences, and where that weight leans
lexical a question would still lean lexical after its step; BM25 alone is far behind dense
on questions on every corpus measured (docs/search-quality.md), so a question in plain words
gets a dense weight of 0.73 at least, one with identifiers in it starts from 0.5.
Deterministic and cheap: token rules, document frequencies the BM25 index already holds,
and the BM25 scores of the query's own candidates.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

QUESTION_START = frozenset((
    "how", "what", "why", "when", "where", "which", "who", "whom", "whose", "can", "could",
    "should", "would", "does", "do", "did", "is", "are", "was", "were", "will", "may",
    "must", "has", "have", "shall"))
STEP = 1.0  # logit units per unit of evidence
LIMITS = (0.05, 0.95)  # neither side is ever switched off by a query's evidence
RARE_FROM = 0.6  # normalised idf (log(N/df) / log N) above which a term counts as rare
STANDOUT_GAP = 0.5  # BM25 (top1 - top2) / top1 at which the standout signal is full
_WORD = re.compile(r"\S+")
_IDENT = re.compile(r"[A-Za-z]\w*[-_./:#@+]\w|\w[a-z][A-Z]\w*|[A-Za-z]+\d|\d+[A-Za-z]|"
                    r"\d\.\d|\(\)|::|--\w|^-\w")
_PLAIN = re.compile(r"[A-Za-z]+(?:'[a-z]+)?[?.!,;:]*")


@dataclass(frozen=True)
class QueryEvidence:
    """The signals of one query, each in 0..1."""

    identifier: float
    rare: float
    standout: float
    question: float

    @property
    def shift(self) -> float:
        """Logit shift of the dense weight: + toward dense, - toward lexical. The lexical
        signals are one fact seen three ways (a distinctive term), so the strongest counts,
        not their sum. A rare word counts less the more the query is a question in plain
        words: there it is the question's topic in ordinary words ("How do I make a script
        executable on Unix?"), not a term to match exactly; identifiers and a standout BM25
        hit count in full."""
        rare = self.rare * (1.0 - self.question)
        return STEP * (self.question - max(self.identifier, rare, self.standout))


def identifier_share(query: str) -> float:
    """Share of the query's words that look like identifiers (`libfoo-dev`, `x86_64`,
    `getAddrInfo`, `malloc()`, `--verbose`, `3.0.2`), 1.0 from two such words on."""
    words = _WORD.findall(query)
    found = sum(1 for w in words if _IDENT.search(w))
    return min(1.0, found / 2.0) if words else 0.0


def is_plain_question(query: str) -> float:
    """1.0 for a question in plain words (starts with a question word or ends with '?',
    every word plain letters), 0.5 for a question with other tokens in it, else 0."""
    words = _WORD.findall(query.strip())
    if not words:
        return 0.0
    asks = words[0].lower().strip("\"'(") in QUESTION_START or query.rstrip().endswith("?")
    if not asks:
        return 0.0
    return 1.0 if all(_PLAIN.fullmatch(w) for w in words) else 0.5


def rarity(df: np.ndarray, n_docs: int) -> float:
    """0..1: how far the query's rarest matching term's normalised idf (log(N/df) / log N)
    is above `RARE_FROM`; 0 when no term matches or the corpus is too small to tell."""
    df = df[df > 0]
    if not len(df) or n_docs < 3:
        return 0.0
    nidf = math.log(n_docs / float(df.min())) / math.log(n_docs)
    return float(np.clip((nidf - RARE_FROM) / (1.0 - RARE_FROM), 0.0, 1.0))


def standout(lex_scores: np.ndarray) -> float:
    """0..1: how far BM25's top hit stands out from the second, (s1 - s2) / s1 over
    `STANDOUT_GAP`; 0 with no hit."""
    s = lex_scores[lex_scores > 0]
    if not len(s):
        return 0.0
    second = float(s[1]) if len(s) > 1 else 0.0
    return float(min(1.0, (float(s[0]) - second) / float(s[0]) / STANDOUT_GAP))


def query_evidence(query: str, df: np.ndarray, n_docs: int, lex_scores: np.ndarray
                   ) -> QueryEvidence:
    """The evidence of one query (`df`: its lexical tokens' document frequencies out of
    `n_docs`; `lex_scores`: its BM25 candidate scores, best first)."""
    return QueryEvidence(identifier_share(query), rarity(df, n_docs), standout(lex_scores),
                         is_plain_question(query))


def shifted_alpha(alpha: float, shift: float) -> float:
    """`alpha` moved by `shift` on the logit scale, kept within `LIMITS`."""
    a = min(max(alpha, 1e-6), 1 - 1e-6)
    moved = 1.0 / (1.0 + math.exp(-(math.log(a / (1 - a)) + shift)))
    return min(max(moved, LIMITS[0]), LIMITS[1])


def query_alphas(queries: list[str], tokens: list[list[str]], df: list[np.ndarray],
                 n_docs: int, lex_scores: np.ndarray, alpha: float) -> np.ndarray:
    """Each query's dense weight: `alpha` moved by its evidence (`query_evidence`).

    Args:
        queries: the query texts.
        tokens: their lexical tokens.
        df: per query, its tokens' document frequencies.
        n_docs: lexical documents in the index.
        lex_scores: (nq, n) BM25 candidate scores, best first.
        alpha: the dense weight the index uses.
    """
    return evidence_alphas(query_evidences(queries, tokens, df, n_docs, lex_scores), alpha)


def query_evidences(queries: list[str], tokens: list[list[str]], df: list[np.ndarray],
                    n_docs: int, lex_scores: np.ndarray) -> list[QueryEvidence]:
    """Each query's evidence (`query_alphas` names the arguments): the same for every
    alpha, so found once for several."""
    return [query_evidence(text, df[q] if tokens[q] else np.zeros(0, "int64"), n_docs,
                           lex_scores[q]) for q, text in enumerate(queries)]


def evidence_alphas(evidence: list[QueryEvidence], alpha: float) -> np.ndarray:
    """Each query's dense weight from its evidence: `alpha` moved by its shift."""
    return np.array([shifted_alpha(question_start(alpha, ev), ev.shift) for ev in evidence],
                    dtype="float64")


def question_start(alpha: float, ev: QueryEvidence) -> float:
    """The weight a query's shift starts from: even weights at least for a question (one
    with identifiers in it too: "Is there a scanf() equivalent?", which its identifiers then
    move toward BM25), the index's weight otherwise."""
    return max(alpha, 0.5) if ev.question > 0 else alpha


BUCKETS = ("question", "keywords", "identifier")


def query_bucket(query: str) -> str:
    """The query's style, for evaluation by bucket: `identifier` when it holds an
    identifier-like word, else `question` when it asks one, else `keywords`."""
    if identifier_share(query) > 0:
        return "identifier"
    return "question" if is_plain_question(query) > 0 else "keywords"
