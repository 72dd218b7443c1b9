"""`canaryctl report`: the stabilization checklist of one rollout, filled from the store's evidence.

    evidence.py   reads the store (and the bots' log files) into plain values
    checklist.py  the checklist's lines as data, and how each is judged from the evidence
    document.py   the report as one JSON document: the source every rendering reads
    markdown.py   the document as Markdown for people
    plots.py      the few figures a person would rather look at (SVG, drawn lazily)
    archive.py    the deterministic tar.gz with its SHA-256 manifest, and its verification
"""
