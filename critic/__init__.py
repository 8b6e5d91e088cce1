"""Sufficiency critic (SIM-RAG). Built in the critic issue; the foundation ships no critic."""
