"""Features: the Feature dataclass, discovery from anchors or seeds, evaluation and evidence."""
