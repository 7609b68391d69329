"""Levenshtein edit distance and a simple "did you mean?" spell suggester.

The edit distance between two strings is the minimum number of single
character insertions, deletions and substitutions needed to turn one into
the other. The dynamic-programming table is reduced to two rows, so memory
use is O(min(len(a), len(b))).
"""


def levenshtein(a, b):
    """Return the edit distance between strings ``a`` and ``b``."""
    if a == b:
        return 0
    # Keep the shorter string along the row to save memory.
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, start=1):
        current = [i]
        for j, cb in enumerate(b, start=1):
            cost = 0 if ca == cb else 1
            current.append(min(
                previous[j] + 1,         # deletion
                current[j - 1] + 1,      # insertion
                previous[j - 1] + cost,  # substitution (or match)
            ))
        previous = current
    return previous[-1]


def similarity(a, b):
    """Normalized similarity in [0, 1]; 1.0 means identical strings."""
    longest = max(len(a), len(b))
    return 1.0 if longest == 0 else 1.0 - levenshtein(a, b) / longest


def did_you_mean(word, vocabulary, max_distance=2, limit=3):
    """Return the closest vocabulary words within ``max_distance`` edits."""
    word = word.lower()
    scored = []
    for candidate in vocabulary:
        # Cheap length filter: the distance is at least the length difference.
        if abs(len(candidate) - len(word)) > max_distance:
            continue
        distance = levenshtein(word, candidate.lower())
        if distance <= max_distance:
            scored.append((distance, candidate))
    scored.sort()
    return [candidate for _, candidate in scored[:limit]]


if __name__ == "__main__":
    print(levenshtein("kitten", "sitting"))   # 3
    print(levenshtein("flaw", "lawn"))        # 2
    print(round(similarity("neutron", "neuron"), 3))
    commands = ["commit", "checkout", "cherry-pick", "clone", "config", "clean"]
    print(did_you_mean("chekout", commands))
    print(did_you_mean("comit", commands))
