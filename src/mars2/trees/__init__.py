"""Search-tree explorer: ``python -m mars2.trees view <run>/trees/<file>.json -o tree.html``.

- :mod:`.model`: the saved tree files → display records (node status, final answer, outcome, layout).
- :mod:`.html`: one self-contained HTML page (inline JS/CSS/SVG, no network) to browse every tree.
- :mod:`.text`: ``--format mermaid`` (Markdown with Mermaid blocks) and ``--format dot`` (Graphviz).
Plain JSON reading, no torch / lightning / hydra."""
