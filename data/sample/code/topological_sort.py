"""Topological sorting of a dependency graph with Kahn's algorithm.

Given tasks and the tasks they depend on, produce an order in which every
task comes after all of its dependencies, as a build system or package
installer would. Cycles are detected and reported.
"""

from collections import deque


class CycleError(ValueError):
    """Raised when the dependency graph contains a cycle."""


def topological_order(dependencies):
    """Return a list ordering the keys of ``dependencies``.

    ``dependencies`` maps each task to an iterable of tasks it needs first.
    Tasks that appear only as dependencies are included automatically.
    """
    # Build forward edges (dependency -> dependents) and in-degree counts.
    dependents = {}
    indegree = {}
    for task, needs in dependencies.items():
        indegree.setdefault(task, 0)
        for need in needs:
            indegree.setdefault(need, 0)
            dependents.setdefault(need, []).append(task)
            indegree[task] += 1

    # Start with tasks that have no prerequisites; sort for stable output.
    ready = deque(sorted(t for t, d in indegree.items() if d == 0))
    order = []
    while ready:
        task = ready.popleft()
        order.append(task)
        for nxt in sorted(dependents.get(task, [])):
            indegree[nxt] -= 1
            if indegree[nxt] == 0:
                ready.append(nxt)

    if len(order) != len(indegree):
        stuck = sorted(t for t, d in indegree.items() if d > 0)
        raise CycleError(f"dependency cycle among: {', '.join(stuck)}")
    return order


def build_levels(dependencies):
    """Group tasks into levels that could run in parallel."""
    order = topological_order(dependencies)
    level = {}
    for task in order:
        needs = dependencies.get(task, ())
        level[task] = 1 + max((level[n] for n in needs), default=-1)
    grouped = {}
    for task in order:
        grouped.setdefault(level[task], []).append(task)
    return [grouped[i] for i in sorted(grouped)]


if __name__ == "__main__":
    recipe = {
        "bake": ["shape", "preheat oven"],
        "shape": ["bulk ferment"],
        "bulk ferment": ["mix dough"],
        "mix dough": ["feed starter", "weigh flour"],
        "preheat oven": [],
    }
    print(topological_order(recipe))
    for i, tasks in enumerate(build_levels(recipe)):
        print(f"step {i}: {tasks}")
    try:
        topological_order({"a": ["b"], "b": ["c"], "c": ["a"]})
    except CycleError as err:
        print(err)
