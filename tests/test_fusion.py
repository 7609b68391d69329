"""Fusion math, per-query weights, the guard and probe masking, on tiny inline data; one test
through the real index on the sample corpus (the card records the choice, search uses it)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from tasks.core.config import SearchConfig
from tasks.query.fusion import (
    SearchPlan,
    fuse_convex,
    fuse_rrf,
    normalize_scores,
    resolve_plan,
)
from tasks.query.fusion_choice import pick, probe_metrics
from tasks.query.probe_drawing import doc_pieces, probe_for
from tasks.query.weights import (
    LIMITS,
    identifier_share,
    is_plain_question,
    query_alphas,
    rarity,
    shifted_alpha,
    standout,
)

R = np.array


def test_minmax_and_zscore_over_valid_entries_only():
    s = R([[3.0, 1.0, 2.0, 99.0], [5.0, 5.0, 0.0, 0.0]])
    valid = R([[True, True, True, False], [True, True, False, False]])
    mm = normalize_scores(s, valid, "minmax")
    assert mm[0].tolist() == [1.0, 0.0, 0.5, 0.0]
    assert mm[1].tolist() == [1.0, 1.0, 0.0, 0.0]  # all equal: each at the top
    z = normalize_scores(s, valid, "zscore")
    assert z[0, :3] == pytest.approx([1.2247449, -1.2247449, 0.0])
    assert z[1].tolist() == [0.0, 0.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="minmax or zscore"):
        normalize_scores(s, valid, "rank")


def test_convex_alpha_ends_reproduce_each_side_and_both_sides_count():
    dense = (R([[0.9, 0.8, 0.7]]), R([[1, 2, 3]]))
    lexical = (R([[10.0, 6.0, 2.0]]), R([[3, 4, 2]]))
    assert fuse_convex(dense, lexical, 1.0, "minmax", 3)[1][0].tolist()[:1] == [1]
    assert fuse_convex(dense, lexical, 0.0, "minmax", 3)[1][0].tolist()[:1] == [3]
    scores, rows = fuse_convex(dense, lexical, 0.5, "minmax", 4)
    # row 2: dense 0.5, lexical 0 -> 0.25; row 3: dense 0, lexical 1 -> 0.5;
    # row 1: dense 1 -> 0.5 (tie with 3: smaller row first); row 4: lexical 0.5 -> 0.25
    assert rows[0].tolist() == [1, 3, 2, 4]
    assert scores[0].tolist() == pytest.approx([0.5, 0.5, 0.25, 0.25])


def test_convex_per_query_alpha_and_empty_sides():
    dense = (R([[0.9, 0.1], [0.0, 0.0]]), R([[1, 2], [-1, -1]]))
    lexical = (R([[1.0, 9.0], [4.0, 2.0]]), R([[1, 2], [5, 6]]))
    _, rows = fuse_convex(dense, lexical, R([0.9, 0.1]), "minmax", 2)
    assert rows[0].tolist() == [1, 2]  # mostly dense
    assert rows[1].tolist() == [5, 6]  # nothing dense: the lexical order
    _, rows = fuse_convex(dense, lexical, R([0.1, 0.1]), "minmax", 2)
    assert rows[0].tolist() == [2, 1]


def test_rrf_hand_computed_and_per_query_weights():
    a, b = R([[1, 2, -1]]), R([[2, 3, -1]])
    scores, rows = fuse_rrf([(a, 1.0), (b, 1.0)], 60, 3)
    assert rows[0].tolist() == [2, 1, 3]
    assert scores[0, 0] == pytest.approx(1 / 62 + 1 / 61)
    _, rows = fuse_rrf([(a, R([0.0])), (b, R([1.0]))], 60, 3)
    assert rows[0].tolist()[:2] == [2, 3]


def _convex_one_by_one(dense, lexical, alphas, method, k):
    """The per-query reading of convex fusion (a union of each query's rows), to check the
    all-queries-at-once one against."""
    norms = [normalize_scores(s, r >= 0, method) for s, r in (dense, lexical)]
    lows = [np.where(r >= 0, n, np.inf).min(axis=1)
            for (_, r), n in zip((dense, lexical), norms, strict=True)]
    floors = [np.where(np.isfinite(f), f, 0.0) for f in lows]
    out_s, out_r = np.zeros((len(alphas), k), "float32"), np.full((len(alphas), k), -1)
    for q, a in enumerate(alphas):
        value = {}
        for side, ((_, rows), norm) in enumerate(zip((dense, lexical), norms, strict=True)):
            for r, v in zip(rows[q].tolist(), norm[q].tolist(), strict=True):
                if r >= 0:
                    value.setdefault(r, [floors[0][q], floors[1][q]])[side] = v
        fused = sorted(((a * d + (1.0 - a) * x, r) for r, (d, x) in value.items()),
                       key=lambda t: (-t[0], t[1]))[:k]
        out_r[q, :len(fused)] = [r for _, r in fused]
        out_s[q, :len(fused)] = [f for f, _ in fused]
    return out_s, out_r


def _rrf_one_by_one(ranked, rrf_k, k):
    nq = ranked[0][0].shape[0]
    out_s, out_r = np.zeros((nq, k), "float32"), np.full((nq, k), -1)
    for q in range(nq):
        fused = {}
        for rows, weight in ranked:
            w = np.broadcast_to(np.asarray(weight, dtype="float64"), (nq,))
            for rank, r in enumerate(rows[q].tolist(), 1):
                if r >= 0:
                    fused[r] = fused.get(r, 0.0) + float(w[q]) / (rrf_k + rank)
        best = sorted(fused.items(), key=lambda t: (-t[1], t[0]))[:k]
        out_r[q, :len(best)] = [r for r, _ in best]
        out_s[q, :len(best)] = [v for _, v in best]
    return out_s, out_r


def _candidates(rng, nq, n, pool):
    """(scores, rows) of `nq` queries: distinct rows from `pool`, some slots empty, scores
    with ties."""
    rows = np.stack([rng.choice(pool, n, replace=False) for _ in range(nq)])
    rows[rng.random((nq, n)) < 0.2] = -1
    return np.round(rng.random((nq, n)), 1).astype("float32"), rows


@pytest.mark.parametrize("seed", range(6))
def test_fusions_at_once_equal_the_per_query_reading(seed):
    rng = np.random.default_rng(seed)
    nq, pool = 40, 30
    dense, lexical = _candidates(rng, nq, 12, pool), _candidates(rng, nq, 9, pool)
    dense[1][0] = -1  # a query with nothing dense
    alphas = np.round(rng.random(nq), 2)
    for method in ("minmax", "zscore"):
        for k in (5, 30):
            got, want = fuse_convex(dense, lexical, alphas, method, k), _convex_one_by_one(
                dense, lexical, alphas, method, k)
            assert got[1].tolist() == want[1].tolist()
            assert got[0].tolist() == want[0].tolist()
    for k in (5, 30):
        got = fuse_rrf([(dense[1], alphas * 2), (lexical[1], 1.0)], 60, k)
        want = _rrf_one_by_one([(dense[1], alphas * 2), (lexical[1], 1.0)], 60, k)
        assert got[1].tolist() == want[1].tolist() and got[0].tolist() == want[0].tolist()


def test_resolve_plan_reads_the_card_choice():
    cfg = SearchConfig()
    choice = {"mode": "dense", "fusion": "convex", "alpha": 0.7}
    assert resolve_plan(cfg, choice) == SearchPlan("dense")
    asked = resolve_plan(cfg, choice, mode="hybrid")
    assert (asked.fusion, asked.alpha) == ("convex", 0.7)
    assert resolve_plan(cfg, None).fusion == "rrf"  # a card from before the choice
    fixed = resolve_plan(SearchConfig(fusion="convex", alpha=0.3), choice)
    assert (fixed.mode, fixed.fusion, fixed.alpha) == ("hybrid", "convex", 0.3)
    assert resolve_plan(cfg, choice, mode="lexical") == SearchPlan("lexical")
    with pytest.raises(ValueError, match="expected one of dense, lexical, hybrid"):
        resolve_plan(cfg, choice, mode="sparse")


def _table(sel: dict[str, float], held: dict[str, float]) -> dict:
    return {n: {"selection": {"ndcg_at_10": sel[n]}, "held_out": {"ndcg_at_10": held[n]}}
            for n in sel}


def test_guard_keeps_one_side_only_when_it_wins_by_the_margin():
    base = {"dense": 0.60, "lexical": 0.40}
    win = _table(base | {"rrf": 0.63, "convex@0.5": 0.65}, base | {"rrf": 0.6, "convex@0.5": 0.62})
    assert pick(win, 0.01)[0] == "convex@0.5"  # picked on the selection half
    even = _table(base | {"rrf": 0.605, "convex@0.5": 0.595},
                  base | {"rrf": 0.58, "convex@0.5": 0.7})
    assert pick(even, 0.01)[0] == "rrf"  # dense ahead by 0.0075 over both halves: fused
    lex = {"dense": 0.3, "lexical": 0.8}
    winner, why = pick(_table(lex | {"rrf": 0.79}, lex | {"rrf": 0.78}), 0.01)
    assert winner == "lexical" and "ahead by 0.0150" in why
    assert pick(_table(lex | {"rrf": 0.79}, lex | {"rrf": 0.8}), 0.01)[0] == "rrf"


def test_probe_metrics_from_ranks():
    m = probe_metrics(R([1, 3, 0, 2]))
    assert m["hit_at_1"] == 0.25 and m["hit_at_10"] == 0.75
    assert m["ndcg_at_10"] == pytest.approx((1 + 0.5 + 1 / np.log2(3)) / 4, abs=1e-4)


@pytest.mark.parametrize(("query", "share"), [
    ("libzorvex-dev", 0.5), ("x86_64 getAddrInfo", 1.0), ("malloc() --verbose", 1.0),
    ("how do I bake bread", 0.0), ("openssl 3.0.2 release notes", 0.5)])
def test_identifier_share(query, share):
    assert identifier_share(query) == share


def test_plain_question_and_evidence_signals():
    assert is_plain_question("How do I proof dough?") == 1.0
    assert is_plain_question("why does libfoo-dev fail") == 0.5
    assert is_plain_question("proof dough yeast") == 0.0
    assert rarity(R([1, 500]), 1000) == 1.0  # a term in one document of 1000
    assert rarity(R([400]), 1000) == 0.0
    assert rarity(R([0]), 1000) == 0.0
    assert standout(R([10.0, 2.0, 1.0])) == 1.0
    assert standout(R([10.0, 9.0])) == pytest.approx(0.2)
    assert standout(R([0.0, 0.0])) == 0.0


def test_shifted_alpha_is_monotone_and_bounded():
    assert shifted_alpha(0.5, 0.0) == pytest.approx(0.5)
    assert shifted_alpha(0.5, 1.0) > 0.5 > shifted_alpha(0.5, -1.0)
    assert shifted_alpha(0.99, 10.0) == LIMITS[1] and shifted_alpha(0.01, -10) == LIMITS[0]


def test_a_plain_question_leans_dense_even_where_the_index_leans_lexical():
    df, n = np.array([300, 200]), 1000  # common words: no rare-term signal
    lex = np.array([5.0, 5.0, 4.7])  # no standout hit
    question, keywords = "How do I make dough rise faster?", "dough rise faster"
    alphas = query_alphas([question, keywords], [["dough"], ["dough"]], [df, df], n,
                          np.stack([lex, lex]), 0.3)
    assert alphas[0] == pytest.approx(shifted_alpha(0.5, 1.0))  # even start, one step
    assert alphas[1] == pytest.approx(0.3)  # keywords keep the index's weight
    assert query_alphas([question], [["dough"]], [df], n, lex[None], 0.8)[0] == \
        pytest.approx(shifted_alpha(0.8, 1.0))  # above even weights: the index's start
    mixed = "Is there a scanf() equivalent?"  # a question (0.5) with an identifier (0.5)
    assert query_alphas([mixed], [["scanf"]], [df], n, lex[None], 0.3)[0] == \
        pytest.approx(0.5)


def test_probe_text_is_taken_out_of_every_chunk_holding_it():
    texts = ["# Proofing bread dough\nLet the dough rise in a warm place for an hour. "
             "How long should dough rest?", "How long should dough rest? Longer when cold."]
    pieces = doc_pieces(texts, "Bread")
    assert pieces["question"] == ["How long should dough rest?"]
    assert pieces["heading"] == ["# Proofing bread dough"]
    assert "Let the dough rise in a warm place for an hour." in pieces["cloze"]
    probe = probe_for("d1", [4, 5], texts, None, 0, np.random.default_rng(0))
    assert probe.kind == "question" and probe.query == "How long should dough rest?"
    assert set(probe.masked) == {4, 5}
    assert all(probe.query not in t for t in probe.masked.values())
    heading = probe_for("d1", [4, 5], texts, None, 1, np.random.default_rng(0))
    assert heading.query == "Proofing bread dough" and set(heading.masked) == {4}
    assert probe_for("d2", [1], ["too short"], None, 0, np.random.default_rng(0)) is None


def test_masked_bm25_score_matches_the_index_and_drops_removed_terms(tmp_path):
    from tasks.query.lexical import LexicalIndex, build_lexical, save_lexical, tokenize

    cfg = SearchConfig()
    texts = ["volcanic ash and lava flows from the crater", "bread dough rises with yeast",
             "lava lamps are decorative", "the crater lake is cold and deep"]
    save_lexical(build_lexical(texts, cfg), tmp_path)
    lex = LexicalIndex.load(tmp_path, cfg, np.arange(len(texts)))
    query = tokenize("lava crater")
    scores, rows = lex.search(["lava crater"], 4)
    for s, r in zip(scores[0], rows[0], strict=True):
        tokens = tokenize(texts[r])
        assert lex.masked_score(query, int(r), tokens, tokens) == pytest.approx(float(s),
                                                                                rel=1e-5)
    masked = tokenize("volcanic ash and flows from the")
    assert lex.masked_score(query, 0, tokenize(texts[0]), masked) == 0.0
    partly = tokenize("volcanic ash and lava flows")
    assert 0 < lex.masked_score(query, 0, tokenize(texts[0]), partly) < float(scores[0, 0])


def test_top_documents_are_bm25s_scores_best_first_ties_in_document_order(tmp_path):
    """The batched BM25 search gives the scores bm25s gives, bit for bit (a repeated query
    word counts twice, as in bm25s), best first, equal scores in document order, and pads a
    query with fewer matches than k with score 0."""
    from tasks.query.lexical import LexicalIndex, build_lexical, save_lexical

    cfg = SearchConfig()
    rng = np.random.default_rng(3)
    words = [f"w{i}" for i in range(40)]
    texts = [" ".join(rng.choice(words, int(rng.integers(3, 12)))) for _ in range(300)]
    texts += ["w1 w2", "w2 w1", "w1 w2"] + ["w39 w38"] * 2  # equal scores
    save_lexical(build_lexical(texts, cfg), tmp_path)
    lex = LexicalIndex.load(tmp_path, cfg, np.arange(len(texts)))
    queries = [list(rng.choice(words, int(rng.integers(1, 6)))) for _ in range(200)]
    queries += [["w1", "w2"], ["w39", "w38", "w39"], ["w5", "absent"], ["absent"]]
    k = 25
    docs, scores = lex.top_documents(queries, k)
    for q, d, s in zip(queries, docs, scores, strict=True):
        known = [t for t in q if t in lex.index.vocab_dict]
        full = lex.index.get_scores(known) if known else np.zeros(len(texts), "float32")
        best = sorted(range(len(texts)), key=lambda i: (-full[i], i))[:k]
        expected = [i for i in best if full[i] > 0]
        assert d[:len(expected)].tolist() == expected
        assert s[:len(expected)].tolist() == full[expected].tolist()  # bit for bit
        assert not s[len(expected):].any()


@pytest.fixture(scope="module")
def sample_index(sample_run):
    return sample_run / "data/07_index"


@pytest.mark.slow
def test_index_card_records_the_choice_and_search_uses_it(sample_index):
    from tasks.query.search import load_index_folder, search_summary

    card = json.loads((sample_index / "card.json").read_text())
    choice = card["search_choice"]
    assert choice["probes"] >= 2 * 10 and set(choice["candidates"]) >= {
        "dense", "lexical", "rrf", "convex@0.5"}
    assert choice["winner"] in choice["candidates"] and choice["reason"]
    for metrics in choice["candidates"].values():
        assert set(metrics["selection"]) == {"ndcg_at_10", "hit_at_1", "hit_at_10"}
    folder = load_index_folder(sample_index)
    assert folder.plan.mode == choice["mode"]
    line = search_summary(sample_index)  # what `embedpipe status` and the run summary say
    assert line.startswith(f"search: {folder.plan.describe()} (chosen on {choice['probes']}")
    queries = ["How do volcanoes form?", "sourdough starter", "compound interest"]
    default = folder.rank(queries, 10)
    chosen = folder.rank(queries, 10, mode=choice["mode"], fusion=choice["fusion"],
                         alpha=choice["alpha"])
    assert (default[1] == chosen[1]).all()
    hybrid = folder.rank(queries, 10, mode="hybrid")
    assert (hybrid[1] == folder.rank(queries, 10, mode="hybrid", fusion=choice["fusion"],
                                     alpha=choice["alpha"])[1]).all()


def test_a_rare_word_in_a_plain_question_does_not_cancel_the_question():
    from tasks.query.weights import QueryEvidence

    plain_question = QueryEvidence(identifier=0.0, rare=1.0, standout=0.0, question=1.0)
    keywords = QueryEvidence(identifier=0.0, rare=1.0, standout=0.0, question=0.0)
    mixed = QueryEvidence(identifier=0.0, rare=1.0, standout=0.0, question=0.5)
    assert plain_question.shift == pytest.approx(1.0)  # toward dense in full
    assert keywords.shift == pytest.approx(-1.0)  # a rare term: toward BM25
    assert mixed.shift == pytest.approx(0.0)
    # an identifier or a standout BM25 hit still counts in a question
    assert QueryEvidence(1.0, 0.0, 0.0, 1.0).shift == pytest.approx(0.0)
    assert QueryEvidence(0.0, 0.0, 1.0, 1.0).shift == pytest.approx(0.0)


def _finance_labels(folder, n_queries: int) -> None:
    """A BEIR set over the sample's finance corpus in `folder`: each document's title and
    first sentence as queries for it, `n_queries` in all."""
    import shutil

    from tests.workspace import REPO

    (folder / "qrels").mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "data/sample/finance/corpus.jsonl", folder / "corpus.jsonl")
    docs = [json.loads(x) for x in (folder / "corpus.jsonl").read_text().splitlines()]
    pairs = [(d["_id"], d["title"]) for d in docs] + [
        (d["_id"], d["text"].split(". ")[0]) for d in docs]
    (folder / "queries.jsonl").write_text("".join(
        json.dumps({"_id": f"q{i}", "text": t}) + "\n" for i, (_, t) in
        enumerate(pairs[:n_queries])))
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(
        f"q{i}\t{d}\t1\n" for i, (d, _) in enumerate(pairs[:n_queries])))


@pytest.mark.slow
def test_labels_outrank_probes_at_build(sample_run, tmp_path):
    """With enough BEIR labels beside the corpus the index stage chooses on them (and says
    so), their digest in its fingerprint; with too few, the probes choose as before."""
    from tasks.query.search import load_index_folder, search_summary
    from tests.workspace import copy_workspace, run_stages

    ws = copy_workspace(sample_run, tmp_path / "ws", through="dedup")
    before = json.loads((sample_run / "data/07_index/_manifest.json").read_text())
    _finance_labels(ws / "data/sample/finance", 40)
    run_stages(ws, ["index"])
    choice = json.loads((ws / "data/07_index/card.json").read_text())["search_choice"]
    assert choice["basis"] == "labels" and choice["labeled_queries"] == 40
    assert choice["label_sets"] == ["finance/corpus.jsonl"] and "probes" not in choice
    assert choice["winner"] in choice["candidates"] and {"dense", "lexical", "rrf"} <= set(
        choice["candidates"])
    assert set(choice["candidates"]["dense"]) == {"selection", "held_out"}
    folder = load_index_folder(ws / "data/07_index")
    assert folder.plan.mode == choice["mode"]
    assert "(chosen on 40 labelled queries of finance/corpus.jsonl: " in search_summary(
        ws / "data/07_index")
    assert json.loads((ws / "data/07_index/_manifest.json").read_text())[
        "fingerprint"] != before["fingerprint"]  # the labels are part of the index's identity

    from tasks.core.params_file import write_overrides

    write_overrides(ws / "params.yaml", {"search.labels_choose": False})  # a test set only
    run_stages(ws, ["index"])
    choice = json.loads((ws / "data/07_index/card.json").read_text())["search_choice"]
    assert choice["basis"] == "probes"
    write_overrides(ws / "params.yaml", {"search.labels_choose": True})
    _finance_labels(ws / "data/sample/finance", 15)  # too few to choose on: probes do
    run_stages(ws, ["index"])
    choice = json.loads((ws / "data/07_index/card.json").read_text())["search_choice"]
    assert choice["basis"] == "probes" and choice["probes"] >= 20


@pytest.mark.slow
def test_index_and_evaluate_read_what_encode_embedded_ahead(sample_run, tmp_path, monkeypatch):
    """Encode embeds the search choice's probes, their target chunks with the probe text
    taken out and evaluate's probes into the vector cache: index and evaluate then run
    without loading the model (a load fails here), also after `cache gc`, and a workspace
    whose cache lacks them embeds them itself and chooses the same way."""
    from tasks.encoders import loading
    from tests.workspace import copy_workspace, run_stages

    ahead = copy_workspace(sample_run, tmp_path / "ahead", through="dedup")
    fresh = copy_workspace(sample_run, tmp_path / "fresh", through="dedup")
    shutil.rmtree(fresh / "data/cache/vectors")  # nothing embedded ahead: index embeds them
    run_stages(fresh, ["index"])

    def no_model(cfg):
        raise AssertionError(f"{cfg.model} loaded: a text was not embedded ahead")

    monkeypatch.setattr(loading, "encoder_for", no_model)
    run_stages(ahead, ["index", "evaluate"])
    chosen, built = (json.loads((ws / "data/07_index/card.json").read_text())["search_choice"]
                     for ws in (ahead, fresh))
    assert chosen["basis"] == "probes" and chosen["probes"] >= 20
    assert (chosen["winner"], chosen["probes"], chosen["probe_kinds"]) == (
        built["winner"], built["probes"], built["probe_kinds"])
    assert json.loads((ahead / "metrics.json").read_text())["probe_queries"] > 0
    from flows.cli import main  # `cache gc` keeps what was embedded ahead

    assert main(["--root", str(ahead), "cache", "gc"]) == 0
    run_stages(ahead, ["index"])


def test_lexical_lists_keep_each_rows_first_entry_as_a_loop_would():
    """BM25 documents of one duplicate group map to one row: the vectorized reading keeps
    each row's first valid entry, best first, up to k, as the per-list loop it replaced."""
    from tasks.query.lexical import _first_of_each_row

    rng = np.random.default_rng(1)
    for _ in range(300):
        nq, width, k = (int(x) for x in rng.integers(1, (6, 40, 30)))
        rows = rng.integers(0, int(rng.integers(1, 15)), size=(nq, width))
        valid = rng.random((nq, width)) > 0.2
        expected = []
        for q in range(nq):
            seen: list[int] = []
            for at in range(width):
                if valid[q, at] and rows[q, at] not in seen:
                    seen.append(rows[q, at])
                    if len(seen) <= k:
                        expected.append((q, at, len(seen) - 1))
        got = _first_of_each_row(rows, valid, k)
        assert list(zip(*(a.tolist() for a in got), strict=True)) == expected
