"""MAIRA-2 (microsoft/maira-2) natively on the pinned transformers — no remote code.

Modules: `config` (the official config.json), `modeling` (LLaVA classes with MAIRA-2's tower,
projector and feature selection), `loading` (official checkpoint keys → modules, lazily),
`images` and `processing` (pixels and the reporting prompt, as the official processor makes
them), `grounding` (grounded output → plain text), `cases` (JSONL studies) and `adapter`
(what the steering engine uses). Importing this package imports nothing heavy.
"""
