"""Skills: the structured record one trajectory yields (schema, parse, extractor prompt), the
persistent library with its statistical gate, and retrieval. See docs/skills.md."""
