"""A generated corpus with the failure dedup and dense search have on real technical text.

Families of documents share boilerplate: the docs, dev and debug variants of one made-up
library, each its own file in its own folder, carry the same long shared section (which dedup
collapses) and a short section of their own. Filler documents recombine the sample corpus's
English. Three kinds of queries, each aimed at one document:

- `shared`: the library's name and a sentence of the family's shared section, aimed at one
  member each (only duplicate expansion can return the members dedup dropped);
- `own`: words of the member's own section;
- `identifier`: a suffixed member's package name (`libzorvex-dbg`), which only lexical
  matching can pin to the right member (the bare name stands for the family: no query).

Queries are written outside the corpus folder, as JSONL with the target `source` path.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from benchmarks.corpus import sample_sentences

SUFFIXES = ("", "-dev", "-doc", "-dbg", "-utils")
OWN = {"": "the runtime library that programs link against",
       "-dev": "headers and static archives for building software against it",
       "-doc": "the reference manual and tutorials in HTML",
       "-dbg": "detached debug symbols for stack traces",
       "-utils": "command line tools that inspect and convert its files"}
_SYLLABLES = ("zor", "vex", "quin", "tal", "mib", "rux", "phen", "dol", "kra", "sep", "yth",
              "gar", "lom", "nix", "bre", "fud", "wex", "cal", "oth", "pim")


def package_name(rng: random.Random) -> str:
    """A made-up, pronounceable library name no model has seen (`libzorvextal`)."""
    return "lib" + "".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(2, 3)))


class Sentences:
    """Sentences of one topic handed out without repeats until the pool runs dry (then
    reshuffled), so families rarely share a sentence."""

    def __init__(self, pool: list[str], rng: random.Random) -> None:
        self.pool, self.rng, self.left = pool, rng, []

    def take(self, n: int) -> list[str]:
        out = []
        while len(out) < n:
            if not self.left:
                self.left = self.rng.sample(self.pool, len(self.pool))
            out.append(self.left.pop())
        return out


def family_docs(name: str, sentences: Sentences, rng: random.Random
                ) -> list[tuple[str, str, str]]:
    """(relative path, title, text) of each member of one library's family."""
    shared = " ".join(sentences.take(9))
    version = f"{rng.randint(0, 9)}.{rng.randint(0, 30)}.{rng.randint(0, 9)}"
    members = rng.sample(SUFFIXES, rng.randint(2, len(SUFFIXES)))
    out = []
    for suffix in sorted(members):
        pkg = f"{name}{suffix}"
        own = (f"{pkg} {version} provides {OWN[suffix]}. Install {pkg} on x86_64 or arm64 "
               f"with the package manager.")
        out.append((f"{name}/{pkg}/README.txt", pkg, f"{pkg}\n\n{own}\n\n{shared}"))
    return out


def generate(out_dir: Path, n_families: int, n_filler: int, sample_dir: Path,
             seed: int = 0) -> dict[str, int]:
    """Write the corpus under `out_dir / "corpus"` and `out_dir / "queries.jsonl"`."""
    rng = random.Random(seed)
    pools = {t: Sentences(p, rng) for t, p in sample_sentences(sample_dir).items()
             if t != "code"}  # prose: code lines make poor sentences
    topics = sorted(pools)
    corpus = out_dir / "corpus"
    queries: list[dict[str, str]] = []
    names: set[str] = set()
    for _ in range(n_families):
        name = package_name(rng)
        while name in names:
            name = package_name(rng)
        names.add(name)
        members = family_docs(name, pools[rng.choice(topics)], rng)
        for rel, pkg, text in members:
            (corpus / rel).parent.mkdir(parents=True, exist_ok=True)
            (corpus / rel).write_text(text, encoding="utf-8")
            shared = text.split("\n\n", 2)[2].split(". ")
            queries += [{"query": f"{name} {rng.choice(shared).strip().rstrip('.')}",
                         "source": rel, "kind": "shared"},
                        {"query": f"{pkg.split('-')[0]} {OWN[pkg[len(name):]]}", "source": rel,
                         "kind": "own"}]
            if pkg != name:  # the bare name stands for the whole family: no single target
                queries.append({"query": pkg, "source": rel, "kind": "identifier"})
    for i in range(n_filler):
        topic = rng.choice(topics)
        body = " ".join(pools[topic].take(rng.randint(3, 12)))
        rel = f"filler/{topic}/note-{i:05d}.txt"
        (corpus / rel).parent.mkdir(parents=True, exist_ok=True)
        (corpus / rel).write_text(body, encoding="utf-8")
    with open(out_dir / "queries.jsonl", "w", encoding="utf-8") as f:
        for q in queries:
            f.write(json.dumps(q) + "\n")
    return {"families": n_families, "queries": len(queries),
            "docs": sum(q["kind"] == "own" for q in queries) + n_filler}
