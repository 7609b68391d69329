"""Prefix tree (trie) for fast autocomplete suggestions.

Each node maps a character to a child node. Words are inserted with a
weight (for example, how often users searched for them) and suggestions for
a prefix are returned heaviest first.
"""

import heapq


class TrieNode:
    """One node per character; ``weight`` is set when a word ends here."""

    __slots__ = ("children", "weight")

    def __init__(self):
        self.children = {}
        self.weight = None


class Trie:
    """A set of weighted words supporting prefix queries."""

    def __init__(self):
        self.root = TrieNode()
        self.size = 0

    def insert(self, word, weight=1):
        """Add ``word``; inserting it again increases its weight."""
        node = self.root
        for ch in word:
            node = node.children.setdefault(ch, TrieNode())
        if node.weight is None:
            self.size += 1
            node.weight = 0
        node.weight += weight

    def _find(self, prefix):
        """Return the node reached by following ``prefix``, or None."""
        node = self.root
        for ch in prefix:
            node = node.children.get(ch)
            if node is None:
                return None
        return node

    def __contains__(self, word):
        node = self._find(word)
        return node is not None and node.weight is not None

    def words_with_prefix(self, prefix):
        """Yield (word, weight) pairs for every word starting with prefix."""
        start = self._find(prefix)
        if start is None:
            return
        # Depth-first walk with an explicit stack of (node, text so far).
        stack = [(start, prefix)]
        while stack:
            node, text = stack.pop()
            if node.weight is not None:
                yield text, node.weight
            for ch, child in node.children.items():
                stack.append((child, text + ch))

    def suggest(self, prefix, limit=5):
        """Return up to ``limit`` completions, heaviest first, ties by word."""
        best = heapq.nsmallest(
            limit, self.words_with_prefix(prefix), key=lambda wt: (-wt[1], wt[0])
        )
        return [word for word, _ in best]


if __name__ == "__main__":
    trie = Trie()
    searches = {
        "sourdough": 40, "sourdough starter": 55, "soup": 30, "sour cream": 12,
        "souffle": 8, "sorbet": 20, "focaccia": 25,
    }
    for term, hits in searches.items():
        trie.insert(term, hits)
    print(trie.suggest("sou"))
    print(trie.suggest("sour", limit=2))
    print("soup" in trie, "sou" in trie, trie.size)
