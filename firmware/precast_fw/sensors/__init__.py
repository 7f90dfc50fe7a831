"""Sensor drivers: each module has a class `Sensor(tpl, cfg)` whose read(values) fills a list.

read(values) writes one raw integer per template field into `values` (a
list made once, tpl.FIELD_COUNT long) and allocates nothing.
"""
