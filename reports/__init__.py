"""Reports: result folders -> one self-contained HTML file. Reads result files only (never runs the
simulator or torch); depends on ``core`` only (``core.results`` reads the folders).

``render.render_report(folders, output)`` is the entry point; ``load`` reads a folder, ``tables`` and
``figures``/``timeline`` turn its tables into HTML tables and inline SVG figures, ``assumptions`` stamps
the experiment into the page, ``style`` holds the one palette every figure uses.
"""
