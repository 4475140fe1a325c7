"""Evaluation on the edge path (no torch): event-level figures of labelled recordings."""
