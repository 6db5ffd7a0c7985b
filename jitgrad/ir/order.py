"""Topological order that stays as close as possible to a given order."""

from __future__ import annotations

import heapq


def stable_topological_order(needs: list[set[int]]) -> list[int]:
    """Indices 0..n-1 ordered so that each comes after the indices in its `needs[k]`, taking at
    each point the smallest index that is ready (a rewrite that appended new steps, or moved
    some, keeps the rest in their recorded order). Raises AssertionError on a cycle."""
    waiting = [len(n) for n in needs]  # per step: how many steps it still waits for
    users: list[list[int]] = [[] for _ in needs]  # per step: the steps waiting for it
    for k, n in enumerate(needs):
        for m in n:
            users[m].append(k)
    ready = [k for k, w in enumerate(waiting) if w == 0]
    heapq.heapify(ready)
    ordered = []
    while ready:
        k = heapq.heappop(ready)
        ordered.append(k)
        for u in users[k]:
            waiting[u] -= 1
            if waiting[u] == 0:
                heapq.heappush(ready, u)
    if len(ordered) != len(needs):
        raise AssertionError("internal error: a rewrite produced a cycle")
    return ordered
