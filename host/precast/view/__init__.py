"""Seeing what precast sends and stores: a Wireshark dissector, plots, and a live fleet view.

- dissector.py: `precast dissector`, a Lua dissector written from the templates;
- plot.py: `precast plot`, the stored readings drawn with matplotlib;
- top.py: `precast top`, a live full-screen view of a collector's fleet.

Plot and top read a collector's database alone, SQLite or PostgreSQL, through
the store's Reader: the `templates` table holds each field's unit and scale,
so they need no template files.
"""
