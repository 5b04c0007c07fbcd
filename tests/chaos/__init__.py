"""The whole-stack chaos suite: ``python -m tests.chaos --variant short|soak --seed N``."""
