"""Evaluation: how well the curation filters do, measured against labelled media.

- ``devset``: ``portrait devset``, a labelled development set (real media plus deterministic
  degradations of it), made with the build's own face code (stages/faces.py, stages/face_geometry.py).
- ``evaluate``: ``portrait eval``, every filter's precision and recall and the clean keep-rate of a
  build of labelled media.
"""
