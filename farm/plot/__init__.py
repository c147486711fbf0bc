"""The farm's drawings: a run's chart over its whole lineage, and trials overlaid.

One drawing code for every surface. A chart is first a *model* (runchart, overlay: which
series, which colours, which scales, where the markers go), then a *figure* (figure: a
display list of lines, paths, markers and text in pixels). The figure becomes an SVG
string (the board, HTML reports) or a PNG (OpenCV: `farm chart`, sweep export), so what
is drawn and where is decided once.
"""
