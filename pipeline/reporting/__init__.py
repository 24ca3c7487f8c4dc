"""Reporting: what a finished build holds, for people. Reads a catalog and its shards; builds nothing.

- ``summary``: the text summary a build and ``portrait report`` print (kept/rejected, reasons, tables).
- ``preview``: ``portrait preview`` (one clip as a PNG sheet) and the storage per feature.
- ``contact_sheet``: sheets of kept clips (crops with landmarks) and of rejected clips' thumbnails.
- ``report_html``: ``portrait report --html``, one self-contained page with the above.
"""
