"""Graphviz DOT text of a fused schedule: one node per equation, one cluster per loop group.
Producing the text needs no graphviz; render it with `dot -Tsvg`."""

from __future__ import annotations

from jitgrad.ir.schedule import LoopGroup


def schedule_to_dot(schedule) -> str:
    graph = schedule.graph
    ids: dict = {}

    def node(v) -> str:
        if v not in ids:
            ids[v] = f"n{len(ids)}"
        return ids[v]

    lines = ["digraph jitgrad {", "  rankdir=TB;", "  node [shape=box, fontsize=10];"]
    for k, v in enumerate(graph.inputs):
        lines.append(f'  {node(v)} [label="in{k} {v.aval.short()}", shape=ellipse];')
    for v in graph.consts:
        lines.append(f'  {node(v)} [label="const {v.aval.short()}", shape=plaintext];')
    edges = []
    for k, step in enumerate(schedule.steps):
        eqns = step.eqns if isinstance(step, LoopGroup) else [step.eqn]
        indent = "  "
        if isinstance(step, LoopGroup):
            lines.append(f"  subgraph cluster_{k} {{")
            lines.append(f'    label="fused loop {k} over {step.space}"; style=rounded;')
            indent = "    "
        for e in eqns:
            lines.append(f'{indent}{node(e.out)} [label="{e.op.name}\\n{e.out.aval.short()}"];')
            edges += [f"  {node(x)} -> {node(e.out)};" for x in e.inputs]
        if isinstance(step, LoopGroup):
            lines.append("  }")
    for k, v in enumerate(graph.outputs):
        lines.append(f'  out{k} [label="out{k}", shape=ellipse];')
        edges.append(f"  {node(v)} -> out{k};")
    return "\n".join(lines + sorted(set(edges), key=edges.index) + ["}"])
