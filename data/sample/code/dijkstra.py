"""Dijkstra's shortest-path algorithm on a weighted directed graph.

The graph is an adjacency mapping ``{node: {neighbor: weight, ...}}`` with
non-negative edge weights. A binary heap (heapq) keeps the frontier ordered
by tentative distance, giving O((V + E) log V) running time.
"""

import heapq
import math


def dijkstra(graph, source):
    """Return (distances, predecessors) for all nodes reachable from source."""
    distances = {source: 0}
    previous = {}
    heap = [(0, source)]
    visited = set()

    while heap:
        dist, node = heapq.heappop(heap)
        if node in visited:
            # Stale heap entry: a shorter path was already settled.
            continue
        visited.add(node)
        for neighbor, weight in graph.get(node, {}).items():
            if weight < 0:
                raise ValueError("Dijkstra requires non-negative edge weights")
            candidate = dist + weight
            if candidate < distances.get(neighbor, math.inf):
                distances[neighbor] = candidate
                previous[neighbor] = node
                heapq.heappush(heap, (candidate, neighbor))
    return distances, previous


def shortest_path(graph, source, target):
    """Return (cost, [source, ..., target]) or (inf, []) if unreachable."""
    distances, previous = dijkstra(graph, source)
    if target not in distances:
        return math.inf, []
    # Walk the predecessor links backwards from the target.
    path = [target]
    while path[-1] != source:
        path.append(previous[path[-1]])
    path.reverse()
    return distances[target], path


def add_undirected_edge(graph, a, b, weight):
    """Helper to insert an edge in both directions."""
    graph.setdefault(a, {})[b] = weight
    graph.setdefault(b, {})[a] = weight


if __name__ == "__main__":
    roads = {}
    for a, b, km in [
        ("Amsterdam", "Utrecht", 45),
        ("Amsterdam", "Haarlem", 20),
        ("Haarlem", "Leiden", 32),
        ("Leiden", "The Hague", 19),
        ("Utrecht", "Rotterdam", 57),
        ("The Hague", "Rotterdam", 27),
        ("Utrecht", "Arnhem", 64),
    ]:
        add_undirected_edge(roads, a, b, km)

    cost, route = shortest_path(roads, "Amsterdam", "Rotterdam")
    print(f"{cost} km via {' -> '.join(route)}")
    print(shortest_path(roads, "Arnhem", "Nowhere"))
