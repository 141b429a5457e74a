"""MAIRA-2's official generation settings, without torch: the protocol schema fills them in for a
MAIRA-2 protocol that leaves `generation.max_new_tokens` out, and the adapter uses them for
`radsteer generate`."""

MAX_NEW_TOKENS = 300  # the official greedy settings: 300 new tokens, 450 for grounded reporting
MAX_NEW_TOKENS_GROUNDED = 450


def max_new_tokens(grounded: bool) -> int:
    return MAX_NEW_TOKENS_GROUNDED if grounded else MAX_NEW_TOKENS
