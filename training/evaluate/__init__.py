"""Evaluation: the DCASE 2022 Task 2 metric, systems' scores, reports, selection/ensembles."""
