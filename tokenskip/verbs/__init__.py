"""Verbs that run a method over questions: generate, infer, and the TALE verbs (through the one runner)."""
