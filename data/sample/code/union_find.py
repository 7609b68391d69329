"""Disjoint-set (union-find) structure with Kruskal's minimum spanning tree.

Union by rank and path compression make each operation run in nearly
constant amortized time (the inverse Ackermann function).
"""


class DisjointSet:
    """Tracks a partition of elements into non-overlapping sets."""

    def __init__(self, elements=()):
        self.parent = {}
        self.rank = {}
        self.count = 0  # number of distinct sets
        for item in elements:
            self.add(item)

    def add(self, item):
        """Create a new singleton set for ``item`` if it is unseen."""
        if item not in self.parent:
            self.parent[item] = item
            self.rank[item] = 0
            self.count += 1

    def find(self, item):
        """Return the representative (root) of the set containing item."""
        root = item
        while self.parent[root] != root:
            root = self.parent[root]
        # Path compression: point every node on the path straight at the root.
        while self.parent[item] != root:
            self.parent[item], item = root, self.parent[item]
        return root

    def union(self, a, b):
        """Merge the sets containing a and b; return False if already joined."""
        root_a, root_b = self.find(a), self.find(b)
        if root_a == root_b:
            return False
        # Attach the shallower tree beneath the deeper one.
        if self.rank[root_a] < self.rank[root_b]:
            root_a, root_b = root_b, root_a
        self.parent[root_b] = root_a
        if self.rank[root_a] == self.rank[root_b]:
            self.rank[root_a] += 1
        self.count -= 1
        return True

    def connected(self, a, b):
        """True if a and b belong to the same set."""
        return self.find(a) == self.find(b)


def kruskal(nodes, edges):
    """Return (total_weight, edges) of a minimum spanning forest.

    ``edges`` is an iterable of (weight, u, v) tuples.
    """
    forest = DisjointSet(nodes)
    chosen, total = [], 0
    for weight, u, v in sorted(edges):
        if forest.union(u, v):
            chosen.append((u, v, weight))
            total += weight
    return total, chosen


if __name__ == "__main__":
    cables = [
        (7, "A", "B"), (5, "A", "D"), (8, "B", "C"), (9, "B", "D"),
        (7, "B", "E"), (5, "C", "E"), (15, "D", "E"), (6, "D", "F"),
        (8, "E", "F"), (9, "E", "G"), (11, "F", "G"),
    ]
    weight, tree = kruskal("ABCDEFG", cables)
    print("MST weight:", weight)    # 39
    for u, v, w in tree:
        print(f"  {u}-{v} ({w})")
