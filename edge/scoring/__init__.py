"""Anomaly scoring on the edge and in evaluation (numpy + hnswlib; no torch, no scikit-learn).

- ``scorer``: pooling of patch embeddings, the four inference variants as weighted *parts*,
  ``SectionScorer`` (per-section references, optional standardisation, k-means source
  centres), out-of-sample reference scores, save/load (JSON + ``.npz`` + hnswlib files);
  the ``Embedder`` protocol a torch run and an ONNX Runtime session both satisfy.
- ``backends``: ``knn`` (cosine/Euclidean, numpy exact or hnswlib) and ``gmm`` (numpy EM),
  chosen by the ``type`` key of their config.
- ``spectral``: the spectral-statistics and band-energy detectors' features (no network).
- ``thresholds``: gamma-fit or false-alarm-rate thresholds from normal scores.
- ``explain``: subspace shares, deviating frequency bands and time spans.
"""
